using System.Text;
using LMCache.Controller.Protocol;
using LMCache.Testing;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller.Tests;

/// <summary>The controller's sockets spoken to directly, as a Python worker or an external producer would.</summary>
[IntegrationTest]
public sealed class WireProtocolTests
{
    [Fact]
    public async Task Registration_over_the_reply_socket_and_json_pushes_from_external_producers()
    {
        await using var cluster = await Cluster.StartAsync();

        using (var request = new RequestSocket())
        {
            request.Connect($"tcp://127.0.0.1:{cluster.Controller.ReplyPort}");
            var register = new ControlMessage("RegisterMsg")
                .With("instance_id", "external").With("worker_id", 0).With("ip", "127.0.0.1").With("port", 1).With("distributed_url", "");
            Assert.True(request.TrySendFrame(TimeSpan.FromSeconds(30), ControlMessageCodec.Encode(register)));
            Assert.True(request.TryReceiveFrameBytes(TimeSpan.FromSeconds(30), out var reply));
            Assert.Equal("RegisterRetMsg", ControlMessageCodec.Decode(reply).Type);
        }

        var infos = await cluster.PostAsync("/query_worker_info", new { instance_id = "external" });
        Assert.Equal(1, (int)infos["worker_infos"]![0]!["port"]!);

        // A JSON frame of the same shape is accepted on the pull socket (the original allows it for e.g. Mooncake).
        using (var push = new PushSocket())
        {
            push.Connect($"tcp://127.0.0.1:{cluster.Controller.PullPort}");
            var json = "{\"type\":\"KVAdmitMsg\",\"instance_id\":\"external\",\"worker_id\":0,\"key\":\"vllm@m@1@0@00ff\",\"location\":\"LocalCPUBackend\"}";
            var garbage = new byte[] { 0xc1, 0x00 };
            var message = new NetMQMessage();
            message.Append(garbage);   // a bad frame is logged and dropped, the batch goes on
            message.Append(Encoding.UTF8.GetBytes(json));
            Assert.True(push.TrySendMultipartMessage(TimeSpan.FromSeconds(30), message));
            await Cluster.WaitUntilAsync(() => Task.FromResult(cluster.Controller.State.Locate("vllm@m@1@0@00ff", "external", 0) == "LocalCPUBackend"), "JSON admission indexed");
        }
    }
}
