#pragma once
#include <stddef.h>
#include <stdint.h>

/// The entry point SwiftPM links a debug executable with: it hands the
/// command line to libFuzzer's driver.
int GantryFuzz_main(int argc, char **argv);
