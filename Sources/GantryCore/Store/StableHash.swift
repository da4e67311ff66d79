/// 64-bit FNV-1a of `bytes`: the same in every process and on every run,
/// unlike `Hasher`, for names and keys kept on the disk.
package func stableHash(_ bytes: some Sequence<UInt8>) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
}
