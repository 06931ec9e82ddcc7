namespace LMCache.Protocol;

/// <summary>
/// The <c>command</c> field of an <c>lm://</c> request (offset 0 of the 186-byte header). Values 1–5 mirror
/// <c>lmcache/v1/protocol.py</c> <c>Constants.CLIENT_*</c>; <see cref="Auth"/> is our extension.
/// </summary>
public enum LmCommand
{
    /// <summary>Store <c>length</c> payload bytes under the key. The server sends no reply.</summary>
    Put = 1,

    /// <summary>Read the entry: a 36-byte reply, then <c>length</c> payload bytes on a hit.</summary>
    Get = 2,

    /// <summary>Ask whether the key exists: a 36-byte reply with code 200 (yes) or 400 (no).</summary>
    Exist = 3,

    /// <summary>
    /// List stored keys. The original v1 server never answers it; ours replies 200 with a payload of UTF-8 key strings,
    /// each followed by <c>'\n'</c> (the v0 server's LIST layout).
    /// </summary>
    List = 4,

    /// <summary>Health probe: a 36-byte reply with code 200.</summary>
    Health = 5,

    /// <summary>
    /// Our extension, only used when the server requires a shared token: the first request of a connection, with
    /// <c>length</c> token bytes (UTF-8) after the header and an empty key. Reply 200 accepts; a wrong token gets 400
    /// and the connection is closed. Engines of the original never send it, so they cannot use a token-protected server.
    /// </summary>
    Auth = 64,
}

/// <summary>The <c>code</c> field of an <c>lm://</c> reply (<c>Constants.SERVER_SUCCESS/SERVER_FAIL</c>).</summary>
public enum LmReplyCode
{
    /// <summary>Hit, present or healthy.</summary>
    Success = 200,

    /// <summary>Miss, absent, or refused.</summary>
    Fail = 400,
}

/// <summary>The <c>location</c> field (<c>0</c> = None, <c>1</c> = LocalCPUBackend, <c>2</c> = LocalDiskBackend).</summary>
public enum LmLocation
{
    /// <summary>Unspecified: what clients and servers send.</summary>
    None = 0,

    /// <summary>LocalCPUBackend.</summary>
    LocalCpu = 1,

    /// <summary>LocalDiskBackend.</summary>
    LocalDisk = 2,
}
