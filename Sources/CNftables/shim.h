#ifndef GANTRY_CNFTABLES_SHIM_H
#define GANTRY_CNFTABLES_SHIM_H
#include <stdio.h>
#include <nftables/libnftables.h>
#endif
