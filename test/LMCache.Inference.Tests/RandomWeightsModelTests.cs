using System.Buffers.Binary;
using System.Text.Json;
using LMCache.Inference.Demo;
using LMCache.Inference.Models;
using LMCache.Inference.Models.Safetensors;
using LMCache.Inference.Tokenization;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

public sealed class RandomWeightsModelTests
{
    // A small Llama with tied embeddings: 2 layers, hidden 64, 4 heads / 2 KV heads of 16, MLP 96, vocab 300.
    private const string SmallConfig = """
        {
          "architectures": ["LlamaForCausalLM"],
          "hidden_size": 64,
          "intermediate_size": 96,
          "num_hidden_layers": 2,
          "num_attention_heads": 4,
          "num_key_value_heads": 2,
          "vocab_size": 300,
          "max_position_embeddings": 512,
          "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0,
          "tie_word_embeddings": true,
          "bos_token_id": 256,
          "eos_token_id": [260, 257]
        }
        """;

    [Fact]
    public void A_sharded_folder_follows_the_hugging_face_index_conventions()
    {
        using var folder = new TempFolder();
        // 20,000-byte shards: several files; the embedding (300 × 64 in bf16, 38,400 bytes) exceeds the limit and gets a shard of its own.
        var result = RandomWeightsModel.Write(folder.Path, SmallConfig, new RandomWeightsOptions { MaxShardBytes = 20_000 });

        Assert.Equal(SmallConfig, File.ReadAllText(folder.Combine("config.json")));   // the caller's exact text
        Assert.True(result.Files.Count > 2);
        Assert.Equal(SafetensorsWriter.IndexFileName, result.IndexFile);
        Assert.Equal(result.Files.Select((_, i) => SafetensorsWriter.ShardFileName(i, result.Files.Count)), result.Files);

        using var index = JsonDocument.Parse(File.ReadAllText(folder.Combine(SafetensorsWriter.IndexFileName)));
        var weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        var expected = RandomWeightsModel.LlamaTensors(SmallConfig, SafetensorsDType.BF16);
        Assert.Equal(expected.Select(t => t.Name).Order(StringComparer.Ordinal), weightMap.Keys);   // sorted, every tensor once
        Assert.DoesNotContain("lm_head.weight", weightMap.Keys);                                      // tied embeddings
        Assert.Equal(expected.Sum(t => t.ByteLength), index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        Assert.Equal(expected.Sum(t => t.ElementCount), index.RootElement.GetProperty("metadata").GetProperty("total_parameters").GetInt64());

        // Each shard holds exactly the tensors the index assigns it, within its byte budget unless alone, and its data
        // section is exactly as long as its tensors.
        long total = 0;
        foreach (var file in result.Files)
        {
            var bytes = File.ReadAllBytes(folder.Combine(file));
            var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
            var names = header.RootElement.EnumerateObject().Select(p => p.Name).Where(n => n != "__metadata__").ToArray();
            Assert.Equal(weightMap.Where(p => p.Value == file).Select(p => p.Key).Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));
            var dataBytes = names.Sum(n => expected.Single(t => t.Name == n).ByteLength);
            Assert.True(dataBytes <= 20_000 || names.Length == 1, $"{file} holds {dataBytes} bytes in {names.Length} tensors");
            Assert.Equal(8 + headerLength + dataBytes, bytes.Length);
            Assert.All(names, n => Assert.Equal("BF16", header.RootElement.GetProperty(n).GetProperty("dtype").GetString()));
            total += dataBytes;
        }
        Assert.Equal(result.TotalSize, total);

        // The rest of a model folder: it parses, and any text encodes to ids the embedding has.
        var config = ModelConfig.Parse(File.ReadAllText(folder.Combine("config.json")),
            ModelConfig.ParseGenerationEos(File.ReadAllText(folder.Combine("generation_config.json"))));
        Assert.Equal([260, 257], config.EosTokenIds);
        var tokenizer = HfTokenizer.Load(folder.Combine("tokenizer.json"));
        Assert.All(tokenizer.Encode("def segment_tree(): return 'ünïcödé' 🌲"), id => Assert.InRange(id, 0, 260));
        Assert.True(File.Exists(folder.Combine("chat_template.jinja")));
    }

    [Fact]
    public void Weights_are_deterministic_per_seed_and_norms_are_ones()
    {
        using var first = new TempFolder();
        using var second = new TempFolder();
        using var other = new TempFolder();
        RandomWeightsModel.Write(first.Path, SmallConfig, new RandomWeightsOptions { DType = SafetensorsDType.F32, MaxShardBytes = long.MaxValue });
        RandomWeightsModel.Write(second.Path, SmallConfig, new RandomWeightsOptions { DType = SafetensorsDType.F32, MaxShardBytes = long.MaxValue });
        RandomWeightsModel.Write(other.Path, SmallConfig, new RandomWeightsOptions { DType = SafetensorsDType.F32, MaxShardBytes = long.MaxValue, Seed = 7 });
        var a = File.ReadAllBytes(first.Combine(SafetensorsWriter.SingleFileName));
        Assert.Equal(a, File.ReadAllBytes(second.Combine(SafetensorsWriter.SingleFileName)));
        Assert.NotEqual(a, File.ReadAllBytes(other.Combine(SafetensorsWriter.SingleFileName)));

        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(a);
        using var header = JsonDocument.Parse(a.AsMemory(8, headerLength));
        float[] Values(string name)
        {
            var offsets = header.RootElement.GetProperty(name).GetProperty("data_offsets").EnumerateArray().Select(o => (int)o.GetInt64()).ToArray();
            return [.. Enumerable.Range(0, (offsets[1] - offsets[0]) / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(a.AsSpan(8 + headerLength + offsets[0] + (i * 4))))];
        }
        Assert.All(Values("model.layers.1.post_attention_layernorm.weight"), v => Assert.Equal(1f, v));
        var q = Values("model.layers.0.self_attn.q_proj.weight");
        Assert.All(q, v => Assert.InRange(v, -0.0347f, 0.0347f));          // uniform with std 0.02: |v| < 0.02·√3
        var std = Math.Sqrt(q.Average(v => (double)v * v));
        Assert.InRange(std, 0.018, 0.022);
        Assert.NotEqual(q, Values("model.layers.1.self_attn.q_proj.weight"));   // every tensor its own stream
    }

    [Fact]
    public void The_llama_3_2_1b_shape_has_its_published_sizes()
    {
        var config = ModelConfig.Parse(RandomWeightsModel.Llama32_1BConfigJson);
        Assert.Equal((2048, 16, 32, 8, 64, 128256, 131072), (config.HiddenSize, config.NumLayers, config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, config.VocabSize, config.MaxPositionEmbeddings));
        Assert.Equal(500000.0, config.RopeTheta);
        Assert.Equal("llama3", config.RopeType);
        Assert.Equal([128001, 128008, 128009], config.EosTokenIds);
        Assert.Equal(128000, config.BosTokenId);
        using (var json = JsonDocument.Parse(RandomWeightsModel.Llama32_1BConfigJson))
        {
            var scaling = json.RootElement.GetProperty("rope_scaling");
            Assert.Equal(32.0, scaling.GetProperty("factor").GetDouble());
            Assert.Equal(1.0, scaling.GetProperty("low_freq_factor").GetDouble());
            Assert.Equal(4.0, scaling.GetProperty("high_freq_factor").GetDouble());
            Assert.Equal(8192, scaling.GetProperty("original_max_position_embeddings").GetInt32());
            Assert.Equal(8192, json.RootElement.GetProperty("intermediate_size").GetInt32());
            Assert.True(json.RootElement.GetProperty("tie_word_embeddings").GetBoolean());
            Assert.Equal("bfloat16", json.RootElement.GetProperty("torch_dtype").GetString());
        }

        var tensors = RandomWeightsModel.LlamaTensors(RandomWeightsModel.Llama32_1BConfigJson, SafetensorsDType.BF16);
        Assert.Equal(1 + (16 * 9) + 1, tensors.Count);                     // embeddings, 9 per layer, final norm; no lm_head (tied)
        Assert.Equal(1_235_814_400, tensors.Sum(t => t.ElementCount));       // Llama-3.2-1B's parameter count
        Assert.Equal([512L, 2048L], tensors.Single(t => t.Name == "model.layers.15.self_attn.k_proj.weight").Shape);
        Assert.Equal([2048L, 8192L], tensors.Single(t => t.Name == "model.layers.0.mlp.down_proj.weight").Shape);
        // The default 1 GB shards: three files, as a "sharded bf16" folder.
        Assert.Equal(3, SafetensorsWriter.PlanShards(tensors, new RandomWeightsOptions().MaxShardBytes).Count);
    }

    [Fact]
    public void Unsupported_configs_are_clear_errors()
    {
        var qwen = SmallConfig.Replace("LlamaForCausalLM", "Qwen2ForCausalLM", StringComparison.Ordinal);
        Assert.Contains("Qwen2ForCausalLM", Assert.Throws<NotSupportedException>(() => RandomWeightsModel.LlamaTensors(qwen, SafetensorsDType.BF16)).Message);
        var bias = SmallConfig.Replace("\"hidden_size\"", "\"attention_bias\": true, \"hidden_size\"", StringComparison.Ordinal);
        Assert.Contains("attention_bias", Assert.Throws<NotSupportedException>(() => RandomWeightsModel.LlamaTensors(bias, SafetensorsDType.BF16)).Message);
        var noHidden = SmallConfig.Replace("\"hidden_size\": 64,", "", StringComparison.Ordinal);
        Assert.Contains("hidden_size", Assert.Throws<InvalidDataException>(() => RandomWeightsModel.LlamaTensors(noHidden, SafetensorsDType.BF16)).Message);
        using var folder = new TempFolder();
        File.WriteAllText(folder.Combine("config.json"), "{}");
        Assert.Throws<IOException>(() => RandomWeightsModel.Write(folder.Path, SmallConfig));
    }
}
