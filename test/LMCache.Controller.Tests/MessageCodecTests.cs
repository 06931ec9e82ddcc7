using System.Text;
using LMCache.Controller.Worker;
using MessagePack;

namespace LMCache.Controller.Tests;

public sealed class MessageCodecTests
{
    [Fact]
    public void MessagesAreMsgpackMapsTaggedWithTheTypeName()
    {
        var message = new ControlMessage("KVAdmitMsg").With("instance_id", "i").With("worker_id", 3).With("key", "k").With("location", "LocalCPUBackend");
        var bytes = ControlMessageCodec.Encode(message);

        // Read back with MessagePack's own reader: a 5-entry map whose "type" is the class name, as msgspec writes it.
        var reader = new MessagePackReader(bytes);
        Assert.Equal(5, reader.ReadMapHeader());
        Assert.Equal("type", reader.ReadString());
        Assert.Equal("KVAdmitMsg", reader.ReadString());

        var decoded = ControlMessageCodec.Decode(bytes);
        Assert.Equal("KVAdmitMsg", decoded.Type);
        Assert.Equal(3, decoded.GetInt64("worker_id"));
        Assert.Equal("LocalCPUBackend", decoded.GetString("location"));
    }

    [Fact]
    public void NestedValuesRoundTripAndJsonFramesAreAccepted()
    {
        var message = new ControlMessage("PinWorkerMsg").With("tokens", new[] { 1, 2, 3 }).With("meta", new Dictionary<string, object?> { ["a"] = true, ["b"] = null, ["c"] = 1.5 });
        var decoded = ControlMessageCodec.Decode(ControlMessageCodec.Encode(message));
        Assert.Equal([1, 2, 3], decoded.GetInt32Array("tokens"));
        var meta = Assert.IsType<Dictionary<string, object?>>(decoded["meta"]);
        Assert.Equal(true, meta["a"]);
        Assert.Null(meta["b"]);
        Assert.Equal(1.5, meta["c"]);

        var json = ControlMessageCodec.Decode(Encoding.UTF8.GetBytes("{\"type\":\"KVEvictMsg\",\"instance_id\":\"x\",\"worker_id\":0,\"key\":\"k\",\"location\":\"L\"}"));
        Assert.Equal("KVEvictMsg", json.Type);
        Assert.Equal(0, json.GetInt64("worker_id"));
    }

    [Fact]
    public void FramesWithoutATypeAreRejected()
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        writer.WriteMapHeader(1);
        writer.Write("instance_id");
        writer.Write("x");
        writer.Flush();
        Assert.Throws<FormatException>(() => ControlMessageCodec.Decode(buffer.WrittenMemory));
        Assert.Throws<FormatException>(() => ControlMessageCodec.Decode(new byte[] { 0x93, 1, 2, 3 }));
    }
}
