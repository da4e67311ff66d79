// The shared foundation (state root, errors, clocks, event broadcasts) is
// part of every layer's API.
@_exported import GantryCore
