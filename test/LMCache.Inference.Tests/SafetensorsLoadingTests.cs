using System.Text.Json.Nodes;
using LMCache.Inference.Models;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Models.Safetensors;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// Hugging Face folders from safetensors: fp16 sharded with tied embeddings (the trained demo model), bf16 single and
/// sharded, and the clear errors for missing tensors, wrong shapes, unknown architectures, truncated files and dtypes.
/// </summary>
[IntegrationTest]
public sealed class SafetensorsLoadingTests
{
    private static string DemoCoder => RepositoryFixtures.Folder("test", "fixtures", "lmcache-demo-coder");

    private static ModelLoadOptions Options(WeightQuantization quantization = WeightQuantization.None) =>
        new() { IntraOpThreads = 2, Quantization = quantization };

    [Fact]
    public void Demo_coder_fp16_sharded_tied_matches_its_reference_from_safetensors()
    {
        using var folder = new TempFolder("lmcache-built-coder");
        using var model = LanguageModel.Load(BuiltModelFolders.CopyWithoutOnnx(DemoCoder, folder.Combine("coder")), Options());
        Assert.True(model.IsBuiltGraph);
        Assert.True(model.Config.TieWordEmbeddings);
        var reference = Reference.Load(Path.Combine(DemoCoder, "reference.json"));
        foreach (var prompt in reference.Prompts)
        {
            var logits = BuiltGraphTests.LastLogits(model.Decoder, prompt.InputIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, "lmcache-demo-coder " + prompt.Name);
            Assert.Equal(prompt.Top10, TopIds(logits, 10));
        }
    }

    [Fact]
    public void Bf16_weights_single_and_sharded_equal_their_exact_fp32_widening()
    {
        using var folder = new TempFolder("lmcache-bf16");
        var tensors = BuiltModelFolders.Read(Path.Combine(TinyLlama.Folder, "model.safetensors"));
        var bf16 = tensors.Select(t => t with { DType = "BF16", Data = BuiltModelFolders.Float32ToBf16(t.Data) }).ToList();
        var widened = bf16.Select(t => t with { DType = "F32", Data = BuiltModelFolders.Bf16ToFloat32(t.Data) }).ToList();

        var single = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("bf16"), name => name != "model.safetensors");
        BuiltModelFolders.Write(Path.Combine(single, "model.safetensors"), bf16);
        var sharded = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("bf16-sharded"), name => name != "model.safetensors");
        BuiltModelFolders.WriteSharded(sharded, bf16, shards: 3);
        var fp32 = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("fp32-of-bf16"), name => name != "model.safetensors");
        BuiltModelFolders.Write(Path.Combine(fp32, "model.safetensors"), widened);

        using var bf16Model = LanguageModel.Load(single, Options());
        using var shardedModel = LanguageModel.Load(sharded, Options());
        using var fp32Model = LanguageModel.Load(fp32, Options());
        Assert.Equal(3, Directory.GetFiles(sharded, "model-*-of-00003.safetensors").Length);
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            var expected = BuiltGraphTests.LastLogits(fp32Model.Decoder, prompt.InputIds);
            ColdInferenceTests.AssertClose(expected, BuiltGraphTests.LastLogits(bf16Model.Decoder, prompt.InputIds), prompt.Name + " bf16");
            ColdInferenceTests.AssertClose(expected, BuiltGraphTests.LastLogits(shardedModel.Decoder, prompt.InputIds), prompt.Name + " bf16 sharded");
        }
        // Rounding to bf16 really changed the weights (so the comparison above is not fp32 against itself).
        Assert.NotEqual(TinyLlama.Reference.Prompts[0].LastLogits, BuiltGraphTests.LastLogits(bf16Model.Decoder, TinyLlama.Reference.Prompts[0].InputIds));
        Assert.NotEqual(bf16Model.Fingerprint, fp32Model.Fingerprint);
    }

    [Fact]
    public void Bf16_widening_is_exact_for_every_bit_pattern_and_vector_tail()
    {
        var source = new ushort[65536 + 13];
        for (var i = 0; i < source.Length; i++)
        {
            source[i] = (ushort)(i * 40503);
        }
        var destination = new float[source.Length];
        WeightConversion.Bf16ToFloat32(source, destination);
        for (var i = 0; i < source.Length; i++)
        {
            Assert.Equal((uint)source[i] << 16, BitConverter.SingleToUInt32Bits(destination[i]));
        }
    }

    [Fact]
    public void A_missing_tensor_names_the_file_and_the_tensor()
    {
        using var folder = new TempFolder("lmcache-missing");
        var path = WriteVariant(folder, tensors => tensors.Where(t => t.Name != "model.layers.1.mlp.up_proj.weight"));
        var error = Assert.Throws<SafetensorsException>(() => LanguageModel.Load(path, Options()));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", error.Message, StringComparison.Ordinal);
        Assert.Contains("model.safetensors", error.Message, StringComparison.Ordinal);
        Assert.Contains("missing tensor", error.Message, StringComparison.Ordinal);
        Assert.Equal("model.layers.1.mlp.up_proj.weight", error.TensorName);
    }

    [Fact]
    public void A_wrong_shape_gives_expected_and_found_with_the_file_and_tensor()
    {
        using var folder = new TempFolder("lmcache-shape");
        var path = WriteVariant(folder, tensors => tensors.Select(t => t.Name == "model.layers.2.self_attn.k_proj.weight"
            ? t with { Shape = [32, 128], Data = t.Data[..(32 * 128 * 4)] }
            : t));
        var error = Assert.Throws<SafetensorsException>(() => LanguageModel.Load(path, Options()));
        Assert.Contains("model.layers.2.self_attn.k_proj.weight", error.Message, StringComparison.Ordinal);
        Assert.Contains("expected [64, 128]", error.Message, StringComparison.Ordinal);
        Assert.Contains("found [32, 128]", error.Message, StringComparison.Ordinal);
        Assert.EndsWith("model.safetensors", error.FilePath, StringComparison.Ordinal);
    }

    [Fact]
    public void A_truncated_file_names_the_file_and_the_first_tensor_past_its_end()
    {
        using var folder = new TempFolder("lmcache-truncated");
        var path = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("model"));
        var file = Path.Combine(path, "model.safetensors");
        var tensors = BuiltModelFolders.Read(file);
        using (var stream = new FileStream(file, FileMode.Open))
        {
            stream.SetLength(stream.Length - 1000);
        }
        var error = Assert.Throws<SafetensorsException>(() => LanguageModel.Load(path, Options()));
        Assert.Contains("truncated", error.Message, StringComparison.Ordinal);
        Assert.Equal(file, error.FilePath);
        Assert.Contains(error.TensorName!, tensors.Select(t => t.Name));
        Assert.Contains(error.TensorName!, error.Message, StringComparison.Ordinal);

        // A file cut inside its header is refused too.
        using (var stream = new FileStream(file, FileMode.Open))
        {
            stream.SetLength(100);
        }
        var header = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(file));
        Assert.Contains("truncated", header.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_header_and_an_unsupported_dtype_are_clear_errors()
    {
        using var folder = new TempFolder("lmcache-header");
        var path = WriteVariant(folder, tensors => tensors.Select(t => t.Name == "model.norm.weight"
            ? t with { DType = "I32" }
            : t));
        var dtype = Assert.Throws<SafetensorsException>(() => LanguageModel.Load(path, Options()));
        Assert.Contains("model.norm.weight", dtype.Message, StringComparison.Ordinal);
        Assert.Contains("'I32' is not supported", dtype.Message, StringComparison.Ordinal);

        var garbage = Path.Combine(folder.Path, "garbage.safetensors");
        File.WriteAllBytes(garbage, [16, 0, 0, 0, 0, 0, 0, 0, .. "{not json at all"u8.ToArray()]);
        var header = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(garbage));
        Assert.Contains("bad header", header.Message, StringComparison.Ordinal);
        Assert.Contains("garbage.safetensors", header.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_architecture_lists_the_supported_ones()
    {
        using var folder = new TempFolder("lmcache-arch");
        var path = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("model"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(path, "config.json")))!.AsObject();
        config["architectures"] = new JsonArray("GPT2LMHeadModel");
        File.WriteAllText(Path.Combine(path, "config.json"), config.ToJsonString());
        var error = Assert.Throws<ModelArchitectureException>(() => LanguageModel.Load(path, Options()));
        Assert.Contains("GPT2LMHeadModel", error.Message, StringComparison.Ordinal);
        foreach (var supported in DecoderArchitecture.Supported)
        {
            Assert.Contains(supported, error.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_fingerprint_covers_the_weights_and_the_quantization()
    {
        using var folder = new TempFolder("lmcache-fingerprint");
        var path = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine("model"));
        var fingerprints = new List<string>();
        foreach (var quantization in new[] { WeightQuantization.None, WeightQuantization.Int8, WeightQuantization.Int4, WeightQuantization.None })
        {
            using var model = LanguageModel.Load(path, Options(quantization));
            Assert.Equal(quantization, model.Quantization);
            fingerprints.Add(model.Fingerprint);
        }
        Assert.Equal(fingerprints[0], fingerprints[3]);
        Assert.Equal(3, fingerprints.Take(3).Distinct().Count());

        // The same header with one weight changed inside the sampled first MiB of data (the writer puts the first
        // tensor at data offset 0). Changes deep inside a large shard under an identical header are not sampled:
        // the documented trade-off of not hashing gigabytes at every start.
        var changed = WriteVariant(folder, tensors => tensors.Select((t, i) => i == 0
            ? t with { Data = [0, 0, 0x80, 0x3f, .. t.Data[4..]] }
            : t), "changed");
        var same = WriteVariant(folder, tensors => tensors, "same");
        using var rewritten = LanguageModel.Load(same, Options());
        using var other = LanguageModel.Load(changed, Options());
        // Rewritten by our writer (a different header layout from transformers'), so compare with that baseline.
        Assert.NotEqual(rewritten.Fingerprint, other.Fingerprint);
    }

    [Fact]
    public void Quantization_beside_an_export_builds_and_forcing_the_export_with_it_is_refused()
    {
        using var built = LanguageModel.Load(TinyLlama.Folder, new ModelLoadOptions { IntraOpThreads = 2, GraphSource = ModelGraphSource.Built });
        Assert.True(built.IsBuiltGraph);
        using var quantized = LanguageModel.Load(TinyLlama.Folder, Options(WeightQuantization.Int8));
        Assert.True(quantized.IsBuiltGraph);
        Assert.Throws<NotSupportedException>(() => LanguageModel.Load(TinyLlama.Folder,
            new ModelLoadOptions { GraphSource = ModelGraphSource.OnnxExport, Quantization = WeightQuantization.Int4 }));
    }

    [Fact]
    public void Progress_reports_each_layer_while_loading()
    {
        var lines = new List<string>();
        using var model = LanguageModel.Load(TinyLlama.Folder, new ModelLoadOptions { IntraOpThreads = 2, GraphSource = ModelGraphSource.Built, Progress = lines.Add });
        Assert.Contains("loading weights: layer 4/4", lines);
        Assert.Contains(lines, l => l.StartsWith("decoder graph built: LlamaForCausalLM", StringComparison.Ordinal));
    }

    private static string WriteVariant(TempFolder folder, Func<List<BuiltModelFolders.Tensor>, IEnumerable<BuiltModelFolders.Tensor>> change, string name = "model")
    {
        var path = BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, folder.Combine(name), file => file != "model.safetensors");
        BuiltModelFolders.Write(Path.Combine(path, "model.safetensors"), change(BuiltModelFolders.Read(Path.Combine(TinyLlama.Folder, "model.safetensors"))));
        return path;
    }

    internal static int[] TopIds(float[] logits, int count) =>
        logits.Select((value, id) => (value, id)).OrderByDescending(p => p.value).Take(count).Select(p => p.id).ToArray();
}
