// Descriptors (`FileDescriptor`) and error numbers (`Errno`) in the public
// API are swift-system's types.
@_exported public import SystemPackage
