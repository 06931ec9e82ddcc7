using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Testing;

namespace LMCache.Core.Tests.Configuration;

public sealed class ConfigLoaderTests : IDisposable
{
    private static readonly Dictionary<string, string> s_noEnvironment = [];
    private readonly TempFolder _folder = new("lmcache-config");

    public void Dispose() => _folder.Dispose();

    // ---------------------------------------------------------------- defaults

    /// <summary>
    /// Every key LMCache.NET acts on, its default written out independently of <see cref="ConfigKeys"/> (from the
    /// reference, section 1.3, and the documented deviations), and the options property it lands in.
    /// </summary>
    public static TheoryData<string, object?> SupportedDefaults => new()
    {
        { "chunk_size", 256 },
        { "local_cpu", true },
        { "max_local_cpu_size", 5.0 },
        { "local_disk", null },
        { "max_local_disk_size", 0.0 },
        { "remote_url", null },
        { "remote_serde", "naive" },
        { "save_decode_cache", false },
        { "save_unfull_chunk", false },
        { "blocking_timeout_secs", 10 },
        { "pre_caching_hash_algorithm", "sha256_cbor" },   // deliberate deviation: the original defaults to builtin
        { "cache_policy", "LRU" },
        { "store_location", null },
        { "retrieve_locations", null },
        { "min_retrieve_tokens", 0 },
        { "enable_controller", false },
        { "lmcache_instance_id", "lmcache_default_instance" },
        { "controller_pull_url", null },
        { "controller_reply_url", null },
        { "lmcache_worker_ports", null },
        { "lmcache_worker_ids", null },
        { "lmcache_worker_heartbeat_delay_time", 10 },
        { "lmcache_worker_heartbeat_time", null },
        { "extra_config", null },
    };

    private static readonly Dictionary<string, Func<LMCacheEngineOptions, object?>> s_property = new()
    {
        ["chunk_size"] = o => o.ChunkSize,
        ["local_cpu"] = o => o.LocalCpu,
        ["max_local_cpu_size"] = o => o.MaxLocalCpuSizeGib,
        ["local_disk"] = o => o.LocalDisk,
        ["max_local_disk_size"] = o => o.MaxLocalDiskSizeGib,
        ["remote_url"] = o => o.RemoteUrl,
        ["remote_serde"] = o => o.RemoteSerde,
        ["save_decode_cache"] = o => o.SaveDecodeCache,
        ["save_unfull_chunk"] = o => o.SaveUnfullChunk,
        ["blocking_timeout_secs"] = o => o.BlockingTimeoutSecs,
        ["pre_caching_hash_algorithm"] = o => o.PreCachingHashAlgorithm,
        ["cache_policy"] = o => o.CachePolicy,
        ["store_location"] = o => o.StoreLocation,
        ["retrieve_locations"] = o => o.RetrieveLocations,
        ["min_retrieve_tokens"] = o => o.MinRetrieveTokens,
        ["enable_controller"] = o => o.EnableController,
        ["lmcache_instance_id"] = o => o.LMCacheInstanceId,
        ["controller_pull_url"] = o => o.ControllerPullUrl,
        ["controller_reply_url"] = o => o.ControllerReplyUrl,
        ["lmcache_worker_ports"] = o => o.LMCacheWorkerPorts,
        ["lmcache_worker_ids"] = o => o.LMCacheWorkerIds,
        ["lmcache_worker_heartbeat_delay_time"] = o => o.LMCacheWorkerHeartbeatDelayTime,
        ["lmcache_worker_heartbeat_time"] = o => o.LMCacheWorkerHeartbeatTime,
        ["extra_config"] = o => o.ExtraConfig,
    };

    [Theory]
    [MemberData(nameof(SupportedDefaults))]
    public void Every_supported_key_has_its_documented_default(string key, object? expected)
    {
        var loaded = LMCacheConfigLoader.Load(null, s_noEnvironment);
        var entry = Assert.Single(loaded.Entries, e => e.Key == key);
        Assert.Equal(expected, entry.Value);
        Assert.Equal(ConfigSource.Default, entry.Source);
        Assert.Equal("default", entry.Origin);
        Assert.Equal(expected, s_property[key](loaded.Options));
        Assert.True(ConfigKeys.TryGet(key, out var definition, out var viaAlias));
        Assert.False(viaAlias);
        Assert.True(definition.IsSupported);
        Assert.Equal("LMCACHE_" + key.ToUpperInvariant(), definition.EnvironmentVariable);
    }

    [Fact]
    public void The_default_table_covers_every_supported_key_and_a_default_load_warns_about_nothing()
    {
        var tested = SupportedDefaults.Select(row => (string)row.Data.Item1).ToHashSet();
        var supported = ConfigKeys.All.Where(d => d.IsSupported).Select(d => d.Name).ToHashSet();
        Assert.Equal(supported.Order(), tested.Order());
        var loaded = LMCacheConfigLoader.Load(null, s_noEnvironment);
        Assert.Empty(loaded.Warnings);
        Assert.Null(loaded.FilePath);
        Assert.Equal(ConfigKeys.All.Count, loaded.Entries.Count);
        Assert.Equal(5L * 1024 * 1024 * 1024, loaded.Options.MaxLocalCpuSizeBytes);
        Assert.Equal(0L, loaded.Options.MaxLocalDiskSizeBytes);
    }

    [Fact]
    public void Keys_accepted_without_effect_keep_the_originals_defaults()
    {
        var loaded = LMCacheConfigLoader.Load(null, s_noEnvironment);
        object? Value(string key) => loaded.Entries.Single(e => e.Key == key).Value;
        Assert.Equal(3000, Value("lookup_timeout_ms"));
        Assert.Equal(256, Value("blend_min_tokens"));
        Assert.Equal(" # # ", Value("blend_special_str"));
        Assert.Equal("by_gpu", Value("local_disk_path_sharding"));
        Assert.Equal(300, Value("pin_timeout_sec"));
        Assert.Equal(30, Value("pin_check_interval_sec"));
        Assert.Equal(true, Value("py_enable_gc"));
        Assert.Equal(false, Value("use_layerwise"));
        Assert.False(ConfigKeys.TryGet("use_layerwise", out var definition, out _) && definition.IsSupported);
    }

    // ---------------------------------------------------------------- precedence and origin

    [Fact]
    public void File_then_environment_then_override_with_the_origin_of_each_value()
    {
        var file = WriteYaml("""
            chunk_size: 512
            max_local_cpu_size: 2.5
            remote_serde: kivi
            cache_policy: FIFO
            """);
        var environment = new Dictionary<string, string>
        {
            ["LMCACHE_CHUNK_SIZE"] = "1024",
            ["LMCACHE_MAX_LOCAL_CPU_SIZE"] = "3",
        };
        var overrides = new Dictionary<string, object?> { ["lmcache.chunk_size"] = 2048 };

        var loaded = LMCacheConfigLoader.Load(file, environment, overrides);

        Assert.Equal(2048, loaded.Options.ChunkSize);
        Assert.Equal(3.0, loaded.Options.MaxLocalCpuSizeGib);
        Assert.Equal("kivi", loaded.Options.RemoteSerde);
        Assert.Equal("FIFO", loaded.Options.CachePolicy);
        Assert.Equal(file, loaded.FilePath);
        Assert.Equal((ConfigSource.Override, "override"), Origin(loaded, "chunk_size"));
        Assert.Equal((ConfigSource.Environment, "LMCACHE_MAX_LOCAL_CPU_SIZE"), Origin(loaded, "max_local_cpu_size"));
        Assert.Equal((ConfigSource.File, file), Origin(loaded, "remote_serde"));
        Assert.Equal((ConfigSource.Default, "default"), Origin(loaded, "local_cpu"));
        Assert.Empty(loaded.Warnings);
    }

    [Fact]
    public void Environment_overrides_the_file_and_an_override_without_prefix_works_too()
    {
        var file = WriteYaml("chunk_size: 512\n");
        var fromFile = LMCacheConfigLoader.Load(file, s_noEnvironment);
        Assert.Equal(512, fromFile.Options.ChunkSize);
        var fromEnvironment = LMCacheConfigLoader.Load(file, new Dictionary<string, string> { ["LMCACHE_CHUNK_SIZE"] = "128" });
        Assert.Equal(128, fromEnvironment.Options.ChunkSize);
        var fromOverride = LMCacheConfigLoader.Load(file, s_noEnvironment, new Dictionary<string, object?> { ["chunk_size"] = "64" });
        Assert.Equal(64, fromOverride.Options.ChunkSize);
        Assert.Equal(ConfigSource.Override, Origin(fromOverride, "chunk_size").Source);
    }

    [Fact]
    public void LMCACHE_CONFIG_FILE_names_the_file_quoted_or_not_and_an_explicit_file_wins()
    {
        var named = WriteYaml("chunk_size: 96\n");
        var explicitFile = WriteYaml("chunk_size: 48\n");
        var quoted = LMCacheConfigLoader.Load(null, new Dictionary<string, string> { ["LMCACHE_CONFIG_FILE"] = $"'{named}'" });
        Assert.Equal(96, quoted.Options.ChunkSize);
        Assert.Equal(named, quoted.FilePath);
        Assert.Equal((ConfigSource.File, named), Origin(quoted, "chunk_size"));
        var both = LMCacheConfigLoader.Load(explicitFile, new Dictionary<string, string> { ["LMCACHE_CONFIG_FILE"] = named });
        Assert.Equal(48, both.Options.ChunkSize);
        Assert.Empty(both.Warnings);
    }

    [Fact]
    public void A_JSON_configuration_file_is_read_too()
    {
        var file = _folder.Combine("config.json");
        File.WriteAllText(file, """{"chunk_size": 32, "local_cpu": false, "retrieve_locations": ["LocalDiskBackend"], "extra_config": {"k": 1}}""");
        var options = LMCacheConfigLoader.Load(file, s_noEnvironment).Options;
        Assert.Equal(32, options.ChunkSize);
        Assert.False(options.LocalCpu);
        Assert.Equal(["LocalDiskBackend"], options.RetrieveLocations!);
        Assert.Equal(1L, options.GetExtra("k"));
    }

    [Fact]
    public void A_missing_file_is_a_configuration_error_naming_it()
    {
        var missing = _folder.Combine("nope.yaml");
        var error = Assert.Throws<LMCacheConfigurationException>(() => LMCacheConfigLoader.Load(missing, s_noEnvironment));
        Assert.Contains(missing, error.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- environment parsing

    [Theory]
    [InlineData("512", 512)]
    [InlineData(" 512 ", 512)]
    [InlineData("'512'", 512)]
    [InlineData("\"512\"", 512)]
    [InlineData("  \"512\"  ", 512)]
    public void Environment_integers_are_trimmed_and_unquoted(string raw, int expected)
    {
        var loaded = Load(("LMCACHE_CHUNK_SIZE", raw));
        Assert.Equal(expected, loaded.Options.ChunkSize);
        Assert.Equal((ConfigSource.Environment, "LMCACHE_CHUNK_SIZE"), Origin(loaded, "chunk_size"));
    }

    [Theory]
    [InlineData("'redis://h:6379'", "redis://h:6379")]
    [InlineData("\"lm://localhost:65432\"", "lm://localhost:65432")]
    [InlineData("redis://a:b@h:1/0", "redis://a:b@h:1/0")]
    [InlineData("'it\\'s://x'", "it's://x")]
    [InlineData("\"a\\\\b://x\"", "a\\b://x")]
    [InlineData("'unbalanced://x", "'unbalanced://x")]
    public void Environment_strings_are_unquoted_with_python_style_escapes(string raw, string expected)
    {
        Assert.Equal(expected, Load(("LMCACHE_REMOTE_URL", raw)).Options.RemoteUrl);
    }

    [Theory]
    [InlineData("true", true)]
    [InlineData("True", true)]
    [InlineData("TRUE", true)]
    [InlineData("1", true)]
    [InlineData("'true'", true)]
    [InlineData("false", false)]
    [InlineData("False", false)]
    [InlineData("0", false)]
    [InlineData(" false ", false)]
    public void Environment_booleans_accept_true_false_1_0_in_any_case(string raw, bool expected)
    {
        Assert.Equal(expected, Load(("LMCACHE_SAVE_UNFULL_CHUNK", raw)).Options.SaveUnfullChunk);
        Assert.Equal(expected, Load(("LMCACHE_LOCAL_CPU", raw)).Options.LocalCpu);
    }

    [Theory]
    [InlineData("yes")]
    [InlineData("on")]
    [InlineData("no")]
    [InlineData("off")]
    [InlineData("y")]
    [InlineData("2")]
    [InlineData("")]
    [InlineData("None")]
    public void Environment_booleans_reject_every_other_spelling_naming_key_value_and_allowed_values(string raw)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_SAVE_UNFULL_CHUNK", raw)));
        var problem = Assert.Single(error.Problems);
        Assert.Contains("save_unfull_chunk", problem, StringComparison.Ordinal);
        Assert.Contains($"'{raw}'", problem, StringComparison.Ordinal);
        Assert.Contains("LMCACHE_SAVE_UNFULL_CHUNK", problem, StringComparison.Ordinal);
        Assert.Contains("true, false, 1 or 0", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Environment_lists_are_comma_separated_trimmed_and_drop_empty_items()
    {
        var loaded = Load(
            ("LMCACHE_LMCACHE_WORKER_PORTS", "8000, 8001,,8002 ,"),
            ("LMCACHE_RETRIEVE_LOCATIONS", "LocalCPUBackend , LocalDiskBackend"),
            ("LMCACHE_LMCACHE_WORKER_IDS", "3"));
        Assert.Equal([8000, 8001, 8002], loaded.Options.LMCacheWorkerPorts!);
        Assert.Equal(["LocalCPUBackend", "LocalDiskBackend"], loaded.Options.RetrieveLocations!);
        Assert.Equal([3], loaded.Options.LMCacheWorkerIds!);
    }

    [Fact]
    public void A_bad_list_item_names_the_item()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_LMCACHE_WORKER_PORTS", "8000,eighty")));
        var problem = Assert.Single(error.Problems);
        Assert.Contains("lmcache_worker_ports", problem, StringComparison.Ordinal);
        Assert.Contains("'eighty'", problem, StringComparison.Ordinal);
        var range = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_LMCACHE_WORKER_PORTS", "8000,70000")));
        Assert.Contains("1..65535", range.Message, StringComparison.Ordinal);
        var location = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_RETRIEVE_LOCATIONS", "LocalCPUBackend,GdsBackend")));
        Assert.Contains("LocalCPUBackend, LocalDiskBackend, RemoteBackend", location.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LMCACHE_EXTRA_CONFIG_is_a_JSON_object_with_typed_values()
    {
        var loaded = Load(("LMCACHE_EXTRA_CONFIG", """'{"remote_put_queue_size": 8, "ping_timeout": 2.5, "save_chunk_meta": false, "hash_seed": "42", "nested": {"a": [1, "b"]}}'"""));
        var options = loaded.Options;
        Assert.Equal(8.0, options.GetExtraDouble("remote_put_queue_size", 64));
        Assert.Equal(2.5, options.GetExtraDouble("ping_timeout", 5));
        Assert.False(options.GetExtraBool("save_chunk_meta", true));
        Assert.Equal("42", options.GetExtraString("hash_seed"));
        Assert.Equal("42", options.HashSeed);
        var nested = Assert.IsAssignableFrom<IReadOnlyDictionary<string, object?>>(options.GetExtra("nested"));
        Assert.Equal(new List<object?> { 1L, "b" }, Assert.IsAssignableFrom<IEnumerable<object?>>(nested["a"]));
        Assert.Equal(7.0, options.GetExtraDouble("absent", 7));
        Assert.Throws<LMCacheConfigurationException>(() => options.GetExtraBool("hash_seed", false));
        Assert.Throws<LMCacheConfigurationException>(() => options.GetExtraDouble("save_chunk_meta", 0));
    }

    [Theory]
    [InlineData("[1, 2]")]
    [InlineData("{not json")]
    [InlineData("42")]
    public void LMCACHE_EXTRA_CONFIG_that_is_not_a_JSON_object_is_an_error(string raw)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_EXTRA_CONFIG", raw)));
        Assert.Contains("extra_config", Assert.Single(error.Problems), StringComparison.Ordinal);
        Assert.Contains("JSON object", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_empty_LMCACHE_EXTRA_CONFIG_is_none()
    {
        Assert.Null(Load(("LMCACHE_EXTRA_CONFIG", "  ")).Options.ExtraConfig);
    }

    [Theory]
    [InlineData("file:///data/lmcache/", "/data/lmcache/")]
    [InlineData("file:///tmp/x/", "/tmp/x/")]
    [InlineData("/plain/path", "/plain/path")]
    [InlineData("relative/dir/", "relative/dir/")]
    [InlineData("file:///no/trailing/slash", "file:///no/trailing/slash")]   // the original's rule: only file://…/ is stripped
    public void Local_disk_strips_the_file_scheme_like_the_original(string raw, string expected)
    {
        Assert.Equal(expected, Load(("LMCACHE_LOCAL_DISK", raw)).Options.LocalDisk);
        Assert.Equal(expected, LoadYaml($"local_disk: \"{raw}\"\n").Options.LocalDisk);
    }

    [Theory]
    [InlineData("0.5", 536870912L)]
    [InlineData("1.1", 1181116006L)]      // int(1.1 * 1024**3) in Python: 1181116006.4 truncated
    [InlineData("0.001", 1073741L)]       // 1073741.824 truncated
    [InlineData("2", 2147483648L)]
    [InlineData("'20'", 21474836480L)]
    public void Sizes_in_GiB_become_bytes_truncating_like_python_int(string raw, long bytes)
    {
        var options = Load(("LMCACHE_MAX_LOCAL_CPU_SIZE", raw), ("LMCACHE_MAX_LOCAL_DISK_SIZE", raw), ("LMCACHE_LOCAL_DISK", "/tmp/d")).Options;
        Assert.Equal(bytes, options.MaxLocalCpuSizeBytes);
        Assert.Equal(bytes, options.MaxLocalDiskSizeBytes);
        Assert.Equal(bytes, ConfigConverters.GibToBytes(double.Parse(raw.Trim('\''), System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Fact]
    public void The_string_None_is_not_null_and_fails_validation_for_a_url()
    {
        // Pitfall 18: the original turns LMCACHE_REMOTE_URL=None into the string "None" and then fails obscurely.
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_REMOTE_URL", "None")));
        Assert.Contains("remote_url = 'None'", error.Message, StringComparison.Ordinal);
        Assert.Contains("scheme", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_LMCACHE_variables_are_warnings_and_other_variables_are_ignored()
    {
        var loaded = Load(("LMCACHE_CHUNK_SIZ", "1"), ("PATH", "/bin"), ("lmcache_chunk_size", "7"), ("LMCACHE_CHUNK_SIZE", "64"));
        Assert.Equal(64, loaded.Options.ChunkSize);
        var warning = Assert.Single(loaded.Warnings);
        Assert.Contains("LMCACHE_CHUNK_SIZ", warning, StringComparison.Ordinal);
        Assert.Contains("ignored", warning, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("True")]
    [InlineData("False")]
    [InlineData("0")]
    [InlineData("anything")]
    public void LMCACHE_USE_EXPERIMENTAL_is_accepted_silently(string raw)
    {
        var loaded = Load(("LMCACHE_USE_EXPERIMENTAL", raw), ("LMCACHE_TRACK_USAGE", "false"), ("LMCACHE_HOME", "/x"));
        Assert.Empty(loaded.Warnings);
    }

    [Theory]
    [InlineData("DEBUG")]
    [InlineData("info")]
    [InlineData("'WARNING'")]
    [InlineData("error")]
    [InlineData("CRITICAL")]
    public void LMCACHE_LOG_LEVEL_accepts_the_python_levels(string raw)
    {
        Assert.Empty(Load(("LMCACHE_LOG_LEVEL", raw)).Warnings);
    }

    [Theory]
    [InlineData("VERBOSE")]
    [InlineData("TRACE")]
    [InlineData("")]
    public void A_bad_LMCACHE_LOG_LEVEL_is_an_error_listing_the_levels(string raw)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_LOG_LEVEL", raw)));
        var problem = Assert.Single(error.Problems);
        Assert.Contains("LMCACHE_LOG_LEVEL", problem, StringComparison.Ordinal);
        Assert.Contains("DEBUG, INFO, WARNING, ERROR, CRITICAL", problem, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("avx512")]
    [InlineData("AVX2")]
    [InlineData("'vector128'")]
    [InlineData("scalar")]
    public void LMCACHE_SIMD_accepts_the_four_paths_without_a_warning(string raw)
    {
        Assert.Empty(Load(("LMCACHE_SIMD", raw)).Warnings);
    }

    [Theory]
    [InlineData("sse2")]
    [InlineData("neon")]
    public void A_bad_LMCACHE_SIMD_is_an_error_listing_the_paths(string raw)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => Load(("LMCACHE_SIMD", raw)));
        var problem = Assert.Single(error.Problems);
        Assert.Contains("LMCACHE_SIMD", problem, StringComparison.Ordinal);
        Assert.Contains("avx512, avx2, vector128, scalar", problem, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- YAML

    [Theory]
    [InlineData("yes", true)]
    [InlineData("Yes", true)]
    [InlineData("on", true)]
    [InlineData("ON", true)]
    [InlineData("true", true)]
    [InlineData("no", false)]
    [InlineData("off", false)]
    [InlineData("Off", false)]
    [InlineData("False", false)]
    public void YAML_1_1_plain_booleans_are_booleans(string scalar, bool expected)
    {
        var loaded = LoadYaml($"local_cpu: {scalar}\nsave_unfull_chunk: {scalar}\n");
        Assert.Equal(expected, loaded.Options.LocalCpu);
        Assert.Equal(expected, loaded.Options.SaveUnfullChunk);
    }

    [Theory]
    [InlineData("~")]
    [InlineData("null")]
    [InlineData("Null")]
    [InlineData("NULL")]
    [InlineData("")]
    public void YAML_plain_nulls_are_null(string scalar)
    {
        var loaded = LoadYaml($"remote_url: {scalar}\nlocal_disk: {scalar}\nlmcache_worker_heartbeat_time: {scalar}\n");
        Assert.Null(loaded.Options.RemoteUrl);
        Assert.Null(loaded.Options.LocalDisk);
        Assert.Null(loaded.Options.LMCacheWorkerHeartbeatTime);
        Assert.Equal(ConfigSource.File, Origin(loaded, "remote_url").Source);
    }

    [Fact]
    public void A_YAML_null_for_a_required_number_is_an_error()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("chunk_size: ~\n"));
        Assert.Contains("chunk_size", Assert.Single(error.Problems), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("'yes'", "yes")]
    [InlineData("\"on\"", "on")]
    [InlineData("'null'", "null")]
    [InlineData("\"~\"", "~")]
    [InlineData("'123'", "123")]
    [InlineData("'1.5'", "1.5")]
    public void Quoted_YAML_scalars_stay_strings(string scalar, string expected)
    {
        Assert.Equal(expected, LoadYaml($"lmcache_instance_id: {scalar}\n").Options.LMCacheInstanceId);
    }

    [Fact]
    public void A_quoted_yes_is_not_a_boolean()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("local_cpu: 'yes'\n"));
        Assert.Contains("local_cpu = 'yes'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void YAML_numbers_lists_and_mappings_convert_to_their_types()
    {
        var options = LoadYaml("""
            chunk_size: 1_024
            max_local_cpu_size: 0.25
            max_local_disk_size: 3
            local_disk: /var/cache/lmcache
            lmcache_worker_ports: [7001, 7002]
            retrieve_locations:
              - LocalCPUBackend
              - RemoteBackend
            extra_config:
              remote_put_queue_size: 16
              use_odirect: yes
              names: [a, b]
            """).Options;
        Assert.Equal(1024, options.ChunkSize);
        Assert.Equal(0.25, options.MaxLocalCpuSizeGib);
        Assert.Equal(3.0, options.MaxLocalDiskSizeGib);
        Assert.Equal([7001, 7002], options.LMCacheWorkerPorts!);
        Assert.Equal(["LocalCPUBackend", "RemoteBackend"], options.RetrieveLocations!);
        Assert.Equal(16.0, options.GetExtraDouble("remote_put_queue_size", 64));
        Assert.True(options.GetExtraBool("use_odirect", false));
    }

    [Fact]
    public void A_float_where_an_integer_is_needed_is_an_error_unless_it_is_whole()
    {
        Assert.Equal(512, LoadYaml("chunk_size: 512.0\n").Options.ChunkSize);
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("chunk_size: 512.5\n"));
        Assert.Contains("chunk_size = '512.5'", error.Message, StringComparison.Ordinal);
        Assert.Contains("integer", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Malformed_YAML_names_the_file_line_and_column()
    {
        var file = WriteYaml("chunk_size: 256\nlocal_cpu: true\n  remote_url: x\n");
        var error = Assert.Throws<LMCacheConfigurationException>(() => LMCacheConfigLoader.Load(file, s_noEnvironment));
        Assert.Contains(file, error.Message, StringComparison.Ordinal);
        Assert.Matches(@"line 3, column \d+", error.Message);
        Assert.Contains("not valid YAML", error.Message, StringComparison.Ordinal);

        var unclosed = WriteYaml("chunk_size: 256\nlmcache_worker_ports: [1, 2\nlocal_cpu: true\n");
        var second = Assert.Throws<LMCacheConfigurationException>(() => LMCacheConfigLoader.Load(unclosed, s_noEnvironment));
        Assert.Matches(@"line \d+, column \d+", second.Message);
    }

    [Theory]
    [InlineData("- chunk_size\n- 256\n")]
    [InlineData("just a string\n")]
    public void A_YAML_file_that_is_not_a_mapping_is_an_error(string text)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml(text));
        Assert.Contains("mapping", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("# only a comment\n")]
    [InlineData("---\n")]
    public void An_empty_YAML_file_gives_the_defaults(string text)
    {
        var loaded = LoadYaml(text);
        Assert.Equal(256, loaded.Options.ChunkSize);
        Assert.All(loaded.Entries, e => Assert.Equal(ConfigSource.Default, e.Source));
    }

    // ---------------------------------------------------------------- validation

    [Fact]
    public void Every_problem_is_reported_at_once_naming_key_value_origin_and_what_is_allowed()
    {
        var file = WriteYaml("""
            chunk_size: abc
            max_local_cpu_size: -1
            max_local_disk_size: -0.5
            remote_serde: zip
            cache_policy: random
            pre_caching_hash_algorithm: md5
            min_retrieve_tokens: -3
            blocking_timeout_secs: 0
            store_location: GdsBackend
            """);
        var error = Assert.Throws<LMCacheConfigurationException>(() => LMCacheConfigLoader.Load(file, new Dictionary<string, string> { ["LMCACHE_SAVE_DECODE_CACHE"] = "maybe" }));
        Assert.Equal(10, error.Problems.Count);
        AssertProblem(error, "chunk_size = 'abc'", "expected an integer");
        AssertProblem(error, "max_local_cpu_size = '-1'", "positive size in GiB");
        AssertProblem(error, "max_local_disk_size = '-0.5'", "non-negative");
        AssertProblem(error, "remote_serde = 'zip'", "naive, kivi, cachegen");
        AssertProblem(error, "cache_policy = 'random'", "LRU, FIFO, LFU, MRU");
        AssertProblem(error, "pre_caching_hash_algorithm = 'md5'", "sha256_cbor, builtin");
        AssertProblem(error, "min_retrieve_tokens = '-3'", "must not be negative");
        AssertProblem(error, "blocking_timeout_secs = '0'", "at least 1");
        AssertProblem(error, "store_location = 'GdsBackend'", "LocalCPUBackend, LocalDiskBackend, RemoteBackend");
        AssertProblem(error, "save_decode_cache = 'maybe'", "LMCACHE_SAVE_DECODE_CACHE");
        Assert.All(error.Problems.Take(9), p => Assert.Contains(file, p, StringComparison.Ordinal));
        Assert.Contains("10 problems", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("lru", "LRU")]
    [InlineData("Fifo", "FIFO")]
    [InlineData("lfu", "LFU")]
    [InlineData("MRU", "MRU")]
    public void Cache_policy_is_case_insensitive_and_normalised(string raw, string expected)
    {
        Assert.Equal(expected, Load(("LMCACHE_CACHE_POLICY", raw)).Options.CachePolicy);
    }

    [Fact]
    public void Builtin_hash_is_accepted_and_means_sha256_cbor()
    {
        Assert.Equal("sha256_cbor", Load(("LMCACHE_PRE_CACHING_HASH_ALGORITHM", "builtin")).Options.PreCachingHashAlgorithm);
    }

    [Fact]
    public void Unknown_file_keys_are_warnings_and_do_not_stop_the_load()
    {
        var loaded = LoadYaml("chunk_size: 64\nchunk_sise: 32\nweka_path: /mnt/weka\n");
        Assert.Equal(64, loaded.Options.ChunkSize);
        Assert.Equal(2, loaded.Warnings.Count);
        Assert.Contains(loaded.Warnings, w => w.Contains("'chunk_sise'", StringComparison.Ordinal) && w.Contains("Unknown", StringComparison.Ordinal)
            && w.Contains("Did you mean 'chunk_size'?", StringComparison.Ordinal));
        Assert.Contains(loaded.Warnings, w => w.Contains("'weka_path'", StringComparison.Ordinal) && !w.Contains("Did you mean", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("chunk_sise", "chunk_size")]
    [InlineData("max_local_cpu_sizes", "max_local_cpu_size")]
    [InlineData("Remote_Url", "remote_url")]
    [InlineData("remoteurl", "remote_url")]
    [InlineData("controller_ur", "controller_pull_url")]   // close to a deprecated alias: the suggestion is its new name
    [InlineData("weka_path", null)]
    [InlineData("x", null)]
    [InlineData("chunk", null)]
    public void Typos_get_the_closest_known_key_and_strangers_get_none(string typo, string? expected) =>
        Assert.Equal(expected, ConfigKeys.Suggest(typo));

    [Fact]
    public void Unknown_variables_suggest_the_variable_of_the_closest_key()
    {
        var warning = Assert.Single(Load(("LMCACHE_CHUNK_SIZ", "1")).Warnings);
        Assert.Contains("Did you mean LMCACHE_CHUNK_SIZE?", warning, StringComparison.Ordinal);
    }

    [Fact]
    public void Deprecated_aliases_warn_and_map_to_the_new_key()
    {
        var loaded = LoadYaml("controller_url: 127.0.0.1:9000\nlmcache_worker_port: 8001\n");
        Assert.Equal("127.0.0.1:9000", loaded.Options.ControllerPullUrl);
        Assert.Equal([8001], loaded.Options.LMCacheWorkerPorts!);
        Assert.Contains(loaded.Warnings, w => w.Contains("'controller_url'", StringComparison.Ordinal) && w.Contains("'controller_pull_url'", StringComparison.Ordinal) && w.Contains("deprecated", StringComparison.Ordinal));
        Assert.Contains(loaded.Warnings, w => w.Contains("'lmcache_worker_port'", StringComparison.Ordinal) && w.Contains("'lmcache_worker_ports'", StringComparison.Ordinal));
        Assert.Equal(ConfigSource.File, Origin(loaded, "controller_pull_url").Source);

        var fromEnvironment = Load(("LMCACHE_CONTROLLER_URL", "h:1"));
        Assert.Equal("h:1", fromEnvironment.Options.ControllerPullUrl);
        Assert.Contains(fromEnvironment.Warnings, w => w.Contains("deprecated", StringComparison.Ordinal));
        Assert.Equal("LMCACHE_CONTROLLER_URL", Origin(fromEnvironment, "controller_pull_url").Origin);
    }

    [Fact]
    public void Keys_without_effect_warn_only_when_set_to_a_non_default_value()
    {
        var atDefault = LoadYaml("use_layerwise: false\nlookup_timeout_ms: 3000\nenable_blending: no\n");
        Assert.Empty(atDefault.Warnings);
        var changed = LoadYaml("use_layerwise: true\nlookup_timeout_ms: 100\n");
        Assert.Equal(2, changed.Warnings.Count);
        Assert.All(changed.Warnings, w => Assert.Contains("no effect", w, StringComparison.Ordinal));
        Assert.Contains(changed.Warnings, w => w.Contains("'use_layerwise'", StringComparison.Ordinal));
        Assert.Contains(changed.Warnings, w => w.Contains("'lookup_timeout_ms'", StringComparison.Ordinal));
        // Their values are still type-checked.
        Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("use_layerwise: sometimes\n"));
    }

    [Fact]
    public void Enable_controller_requires_its_endpoints_and_worker_ports()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("enable_controller: true\n"));
        Assert.Contains(error.Problems, p => p.Contains("controller_pull_url", StringComparison.Ordinal));
        Assert.Contains(error.Problems, p => p.Contains("controller_reply_url", StringComparison.Ordinal));
        Assert.Contains(error.Problems, p => p.Contains("lmcache_worker_ports", StringComparison.Ordinal));

        var emptyPorts = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml(
            "enable_controller: true\ncontroller_pull_url: h:1\ncontroller_reply_url: h:2\nlmcache_worker_ports: []\n"));
        Assert.Contains("lmcache_worker_ports", Assert.Single(emptyPorts.Problems), StringComparison.Ordinal);

        var complete = LoadYaml("enable_controller: true\ncontroller_pull_url: h:1\ncontroller_reply_url: h:2\nlmcache_worker_ports: [8001]\n");
        Assert.True(complete.Options.EnableController);
        Assert.Equal("h:2", complete.Options.ControllerReplyUrl);

        // Without enable_controller nothing is required.
        Assert.False(LoadYaml("controller_pull_url: h:1\n").Options.EnableController);
    }

    [Fact]
    public void A_half_configured_disk_tier_is_a_warning()
    {
        Assert.Contains(LoadYaml("local_disk: /tmp/x\n").Warnings, w => w.Contains("disk tier is off", StringComparison.Ordinal));
        Assert.Contains(LoadYaml("max_local_disk_size: 1\n").Warnings, w => w.Contains("disk tier is off", StringComparison.Ordinal));
        Assert.Empty(LoadYaml("local_disk: /tmp/x\nmax_local_disk_size: 1\n").Warnings);
    }

    [Fact]
    public void An_empty_local_disk_is_an_error()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => LoadYaml("local_disk: ''\n"));
        Assert.Contains("local_disk", error.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- helpers

    private static (ConfigSource Source, string Origin) Origin(LoadedConfiguration loaded, string key)
    {
        var entry = loaded.Entries.Single(e => e.Key == key);
        return (entry.Source, entry.Origin);
    }

    private static void AssertProblem(LMCacheConfigurationException error, string keyAndValue, string allowed) =>
        Assert.Contains(error.Problems, p => p.Contains(keyAndValue, StringComparison.Ordinal) && p.Contains(allowed, StringComparison.Ordinal));

    private static LoadedConfiguration Load(params (string Name, string Value)[] variables) =>
        LMCacheConfigLoader.Load(null, variables.ToDictionary(v => v.Name, v => v.Value));

    private LoadedConfiguration LoadYaml(string text) => LMCacheConfigLoader.Load(WriteYaml(text), s_noEnvironment);

    private string WriteYaml(string text)
    {
        var path = _folder.Combine($"config-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, text);
        return path;
    }
}
