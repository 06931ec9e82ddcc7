using LMCache.Inference.Templates.Jinja;

namespace LMCache.Inference.Tests;

/// <summary>The Jinja subset on the constructs real chat templates use, checked against what Jinja2 renders.</summary>
public sealed class JinjaTemplateTests
{
    private static Dictionary<string, object?> Msg(string role, string content) => new() { ["role"] = role, ["content"] = content };

    private static string Render(string template, Dictionary<string, object?> variables) => JinjaTemplate.Parse(template).Render(variables);

    private static readonly List<object?> s_conversation = [Msg("system", "Be brief."), Msg("user", "Hi!"), Msg("assistant", "Hello."), Msg("user", "2+2?")];

    [Fact]
    public void Llama3_official_template()
    {
        const string template = """
            {% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

            '+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

            ' }}{% endif %}
            """;
        var text = Render(template, new() { ["messages"] = s_conversation, ["bos_token"] = "<|begin_of_text|>", ["add_generation_prompt"] = true });
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", text);
    }

    [Fact]
    public void Chatml_template_with_whitespace_control_and_default_system()
    {
        // Qwen2-style: {%- -%} trimming, loop.first, 'is not none', namespace-free.
        const string template = """
            {%- for message in messages %}
                {%- if loop.first and messages[0]['role'] != 'system' %}
                    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
                {%- endif %}
                {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
                {{- '<|im_start|>assistant\n' }}
            {%- endif %}
            """;
        var text = Render(template, new() { ["messages"] = new List<object?> { Msg("user", "Hi!") }, ["add_generation_prompt"] = true });
        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void Mistral_style_template_with_slicing_namespace_and_raise_exception()
    {
        const string template = """
            {%- if messages[0]['role'] == 'system' %}
                {%- set system_message = messages[0]['content'] %}
                {%- set loop_messages = messages[1:] %}
            {%- else %}
                {%- set loop_messages = messages %}
            {%- endif %}
            {%- set ns = namespace(count=0) %}
            {{- bos_token }}
            {%- for message in loop_messages %}
                {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
                {%- endif %}
                {%- set ns.count = ns.count + 1 %}
                {%- if message['role'] == 'user' %}
                    {%- if loop.last and system_message is defined %}
                        {{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}
                    {%- else %}
                        {{- '[INST] ' + message['content'] + '[/INST]' }}
                    {%- endif %}
                {%- else %}
                    {{- ' ' + message['content'] + eos_token }}
                {%- endif %}
            {%- endfor %}
            {{- '<!--' ~ ns.count ~ '-->' }}
            """;
        var variables = new Dictionary<string, object?> { ["messages"] = s_conversation, ["bos_token"] = "<s>", ["eos_token"] = "</s>" };
        Assert.Equal("<s>[INST] Hi![/INST] Hello.</s>[INST] Be brief.\n\n2+2?[/INST]<!--3-->", Render(template, variables));

        var bad = new Dictionary<string, object?> { ["messages"] = new List<object?> { Msg("assistant", "x") }, ["bos_token"] = "<s>", ["eos_token"] = "</s>" };
        var error = Assert.Throws<JinjaException>(() => Render(template, bad));
        Assert.Contains("must alternate", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Filters_tests_and_expressions()
    {
        var vars = new Dictionary<string, object?>
        {
            ["tools"] = new List<object?> { new Dictionary<string, object?> { ["name"] = "get_weather", ["parameters"] = new Dictionary<string, object?> { ["city"] = "string" } } },
            ["items"] = new List<object?> { 3L, 1L, 2L },
            ["text"] = "  Hello World  ",
            ["nothing"] = null,
        };
        Assert.Equal("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"string\"}}", Render("{{ tools[0] | tojson }}", vars));
        Assert.Equal("{\n  \"city\": \"string\"\n}", Render("{{ tools[0].parameters | tojson(indent=2) }}", vars));
        Assert.Equal("Hello World|hello world|3|1,2,3|3-2-1", Render("{{ text | trim }}|{{ text.strip().lower() }}|{{ items | length }}|{{ items | sort | join(',') }}|{{ items | sort(reverse=true) | join('-') }}", vars));
        Assert.Equal("yes|no|yes|yes", Render("{{ 'yes' if nothing is none else 'no' }}|{{ 'yes' if missing is defined else 'no' }}|{{ 'yes' if 'World' in text else 'no' }}|{{ 'yes' if text.startswith('  He') else 'no' }}", vars));
        Assert.Equal("llo|dlroW olleH|[3, 1]|True", Render("{{ text.strip()[2:5] }}|{{ text.strip()[::-1] }}|{{ items[:2] }}|{{ items[-1] == 2 }}", vars));
        Assert.Equal("0a1b2c", Render("{% for x in ['a','b','c'] %}{{ loop.index0 }}{{ x }}{% endfor %}", vars));
        Assert.Equal("a,b", Render("{% for x in ['a','b','c','d'] %}{% if x == 'c' %}{% break %}{% endif %}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", vars).TrimEnd(','));
        Assert.Equal("13", Render("{% for x in items if x != 2 %}{{ x }}{% else %}empty{% endfor %}".Replace("items", "items | sort", StringComparison.Ordinal), vars));
        Assert.Equal("empty", Render("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}", vars));
        Assert.Equal("7|2.5|1|Hi there", Render("{{ 3 + 4 }}|{{ 5 / 2 }}|{{ 7 // 4 }}|{% set greeting %}Hi there{% endset %}{{ greeting }}", vars));
        Assert.Equal("<b>x</b>", Render("{% macro bold(t) %}<b>{{ t }}</b>{% endmacro %}{{ bold('x') }}", vars));
        Assert.Equal("k=v;", Render("{% for k, v in {'k': 'v'}.items() %}{{ k }}={{ v }};{% endfor %}", vars));
        Assert.Equal("get_weather", Render("{{ tools | map(attribute='name') | join(', ') }}", vars));
    }

    [Fact]
    public void Trim_blocks_and_lstrip_blocks_match_huggingface_rendering()
    {
        // With trim_blocks and lstrip_blocks (as apply_chat_template), block tags on their own lines leave no blank lines.
        const string template = "<s>\n{% for m in messages %}\n    {% if m['role'] == 'user' %}\nU: {{ m['content'] }}\n    {% endif %}\n{% endfor %}\nEND";
        var text = Render(template, new() { ["messages"] = new List<object?> { Msg("user", "a"), Msg("assistant", "b"), Msg("user", "c") } });
        Assert.Equal("<s>\nU: a\nU: c\nEND", text);
    }

    [Fact]
    public void Syntax_errors_are_reported()
    {
        Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{% if x %}no end"));
        Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{{ x + }}"));
        Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{% extends 'base.html' %}"));
        Assert.Throws<JinjaException>(() => Render("{{ x | nosuchfilter }}", new() { ["x"] = 1L }));
    }
}
