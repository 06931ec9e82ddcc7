using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace LMCache.Inference.Onnx;

/// <summary>
/// The few ONNX Runtime C API calls the managed package does not wrap, reached through the same native library and
/// its public <see cref="OrtApi"/> function table (field offsets come from the managed package's own struct, so they
/// match the native library it ships with).
/// </summary>
internal static unsafe partial class OrtNativeApi
{
    /// <summary>The API version requested: 12 introduced the in-memory external initializer calls; later tables extend it.</summary>
    private const uint ApiVersion = 12;

    private static readonly Lazy<IntPtr> s_api = new(() =>
    {
        var apiBase = Marshal.PtrToStructure<OrtApiBase>(OrtGetApiBase());
        var api = ((delegate* unmanaged[Cdecl]<uint, IntPtr>)apiBase.GetApi)(ApiVersion);
        return api != IntPtr.Zero ? api : throw new InvalidOperationException($"ONNX Runtime does not provide C API version {ApiVersion}.");
    });

    [LibraryImport("onnxruntime")]
    [UnmanagedCallConv(CallConvs = [typeof(System.Runtime.CompilerServices.CallConvCdecl)])]
    private static partial IntPtr OrtGetApiBase();

    private static IntPtr Function(string name) => Marshal.ReadIntPtr(s_api.Value, (int)Marshal.OffsetOf<OrtApi>(name));

    /// <summary>
    /// <c>OrtApi::AddExternalInitializersFromFilesInMemory</c>: the graph's external-data files named
    /// <paramref name="fileNames"/> are served from the given native buffers instead of the file system. The buffers
    /// must outlive the session.
    /// </summary>
    public static void AddExternalInitializersFromFilesInMemory(SessionOptions options, IReadOnlyList<string> fileNames,
        IReadOnlyList<IntPtr> buffers, IReadOnlyList<long> lengths)
    {
        var count = fileNames.Count;
        var names = new IntPtr[count];
        try
        {
            for (var i = 0; i < count; i++)
            {
                names[i] = OperatingSystem.IsWindows() ? Marshal.StringToCoTaskMemUni(fileNames[i]) : Marshal.StringToCoTaskMemUTF8(fileNames[i]);
            }
            var bufferArray = buffers.ToArray();
            var lengthArray = lengths.Select(l => (nuint)l).ToArray();
            var function = (delegate* unmanaged[Cdecl]<IntPtr, IntPtr*, IntPtr*, nuint*, nuint, IntPtr>)Function(nameof(OrtApi.AddExternalInitializersFromFilesInMemory));
            IntPtr status;
            fixed (IntPtr* namePointers = names)
            fixed (IntPtr* bufferPointers = bufferArray)
            fixed (nuint* lengthPointers = lengthArray)
            {
                status = function(options.DangerousGetHandle(), namePointers, bufferPointers, lengthPointers, (nuint)count);
            }
            GC.KeepAlive(options);
            ThrowOnError(status);
        }
        finally
        {
            foreach (var name in names)
            {
                Marshal.FreeCoTaskMem(name);
            }
        }
    }

    private static void ThrowOnError(IntPtr status)
    {
        if (status == IntPtr.Zero)
        {
            return;
        }
        var message = Marshal.PtrToStringUTF8(((delegate* unmanaged[Cdecl]<IntPtr, IntPtr>)Function(nameof(OrtApi.GetErrorMessage)))(status));
        ((delegate* unmanaged[Cdecl]<IntPtr, void>)Function(nameof(OrtApi.ReleaseStatus)))(status);
        throw new InvalidOperationException($"ONNX Runtime: {message}");
    }
}
