#ifndef GANTRY_CSECCOMP_SHIM_H
#define GANTRY_CSECCOMP_SHIM_H
#include <seccomp.h>
#endif
