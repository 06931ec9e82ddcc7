using System.Runtime.CompilerServices;

// Hot paths stackalloc scratch buffers that are always written before being read (CBOR encoding, hash digests).
[module: SkipLocalsInit]
