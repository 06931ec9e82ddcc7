using System.Text.Json;
using LMCache.Inference.Templates;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Tests;

public sealed class ChatTemplateTests
{
    [Fact]
    public void Fixture_chat_renders_to_the_reference_text_and_ids()
    {
        var template = ChatTemplate.Load(TinyLlama.Folder);
        Assert.NotNull(template);
        var chat = TinyLlama.Reference.Chat;
        var rendered = template.Render(chat.Messages.EnumerateArray(), addGenerationPrompt: true);
        Assert.Equal(chat.Rendered, rendered);
        var tokenizer = HfTokenizer.Load(Path.Combine(TinyLlama.Folder, "tokenizer.json"));
        Assert.Equal(chat.InputIds, tokenizer.Encode(rendered, addSpecialTokens: false));
    }

    [Fact]
    public void Template_inside_tokenizer_config_is_used_when_no_jinja_file_exists()
    {
        using var folder = new LMCache.Testing.TempFolder();
        var source = File.ReadAllText(Path.Combine(TinyLlama.Folder, "chat_template.jinja"));
        File.WriteAllText(Path.Combine(folder.Path, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["bos_token"] = new Dictionary<string, object> { ["content"] = "<|begin_of_text|>" },
            ["eos_token"] = "<|eot_id|>",
            ["chat_template"] = source,
        }));
        var template = ChatTemplate.Load(folder.Path);
        Assert.NotNull(template);
        var chat = TinyLlama.Reference.Chat;
        Assert.Equal(chat.Rendered, template.Render(chat.Messages.EnumerateArray()));
    }
}
