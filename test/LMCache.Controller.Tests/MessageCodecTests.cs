using System.Text;
using LMCache.Controller.Protocol;
using MessagePack;

namespace LMCache.Controller.Tests;

/// <summary>The controller protocol's codec (LMCache.Controller.Protocol): the msgspec-compatible msgpack layout, byte for byte.</summary>
public sealed class MessageCodecTests
{
    /// <summary>
    /// Golden bytes, written from the msgpack specification (not from our encoder): a fixmap whose first entry is
    /// "type", fixstr keys, positive fixint, float64 (0xcb) as msgspec writes Python floats, an array with a uint16
    /// (0xcd), true (0xc3) and nil (0xc0), fields in insertion order.
    /// </summary>
    [Fact]
    public void Encoding_is_byte_for_byte_the_msgspec_layout()
    {
        var message = new ControlMessage(MessageTypes.KvAdmit)
            .With("instance_id", "i").With("worker_id", 3).With("key", "k").With("ts", 1.5)
            .With("tokens", new[] { 1, 300 }).With("pinned", true).With("note", null);
        const string Golden = "88a474797065aa4b5641646d69744d7367ab696e7374616e63655f6964a169a9776f726b65725f696403a36b6579a16b"
            + "a27473cb3ff8000000000000a6746f6b656e739201cd012ca670696e6e6564c3a46e6f7465c0";
        var bytes = ControlMessageCodec.Encode(message);
        Assert.Equal(Golden, Convert.ToHexStringLower(bytes));

        var decoded = ControlMessageCodec.Decode(Convert.FromHexString(Golden));
        Assert.Equal(MessageTypes.KvAdmit, decoded.Type);
        Assert.Equal(["instance_id", "worker_id", "key", "ts", "tokens", "pinned", "note"], decoded.Fields.Keys);
        Assert.Equal([1, 300], decoded.GetInt32Array("tokens"));
        Assert.Equal(1.5, decoded.GetDoubleOrDefault("ts", 0));
        Assert.True(decoded.GetBoolOrDefault("pinned", false));
        Assert.Null(decoded["note"]);
    }

    [Fact]
    public void Messages_are_msgpack_maps_tagged_with_the_type_name()
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
    public void Nested_values_round_trip_and_json_frames_are_accepted()
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
    public void Frames_without_a_type_are_rejected()
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
