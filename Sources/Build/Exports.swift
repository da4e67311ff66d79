// The shared foundation (errors above all) is part of every layer's API.
@_exported import GantryCore
