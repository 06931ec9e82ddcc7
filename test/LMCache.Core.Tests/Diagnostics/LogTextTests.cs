using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Core.Tests.Diagnostics;

public sealed partial class LogTextTests
{
    [Theory]
    [InlineData("plain key@1@0@abc", "plain key@1@0@abc")]
    [InlineData("esc\u001b[31mred", "esc\\u001B[31mred")]
    [InlineData("nul\0byte", "nul\\u0000byte")]
    [InlineData("line\r\nforged", "line\\r\\nforged")]
    [InlineData("tab\there", "tab\\there")]
    [InlineData("back\\slash", "back\\\\slash")]
    [InlineData("del\u007f c1\u009b", "del\\u007F c1\\u009B")]
    [InlineData("sep\u2028para\u2029", "sep\\u2028para\\u2029")]
    [InlineData("bidi\u202Eevil\u2066", "bidi\\u202Eevil\\u2066")]
    [InlineData("accents é and 日本 stay", "accents é and 日本 stay")]
    public void Escapes_control_and_line_breaking_characters_only(string raw, string logged)
    {
        Assert.Equal(logged, LogText.Escape(raw));
        Assert.Equal(logged, new LogText(raw).ToString());
    }

    [Fact]
    public void Clean_text_is_returned_without_a_copy()
    {
        const string clean = "vllm@model@1@0@deadbeef";
        Assert.Same(clean, LogText.Escape(clean));
        Assert.Equal("", LogText.Escape(null));
    }

    [Fact]
    public void A_logger_message_parameter_of_type_log_text_is_escaped_in_the_formatted_line()
    {
        var logger = new CapturingLogger();
        LogKey(logger, "k\u001b]0;owned\u0007\0");
        var line = Assert.Single(logger.Lines);
        Assert.Equal("key k\\u001B]0;owned\\u0007\\u0000 dropped", line);
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "key {Key} dropped")]
    private static partial void LogKey(ILogger logger, LogText key);

    private sealed class CapturingLogger : ILogger
    {
        public List<string> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }
}
