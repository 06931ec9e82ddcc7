using System.Text.Json.Nodes;
using LMCache.Core.Diagnostics;

namespace LMCache.Serving;

/// <summary>A client error answered as OpenAI does: HTTP status + <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
internal sealed class OpenAiRequestException : LMCacheException
{
    public OpenAiRequestException(string message, string? param = null, int status = 400, string type = "invalid_request_error", string? code = null)
        : base(message)
    {
        Param = param;
        Status = status;
        Type = type;
        Code = code;
    }

    public OpenAiRequestException()
    {
        Type = "invalid_request_error";
        Status = 400;
    }

    public OpenAiRequestException(string message, Exception innerException) : base(message, innerException)
    {
        Type = "invalid_request_error";
        Status = 400;
    }

    public string? Param { get; }

    public int Status { get; }

    public string Type { get; }

    public string? Code { get; }

    public static JsonObject Body(string message, string type, string? param, string? code) => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = message,
            ["type"] = type,
            ["param"] = param,
            ["code"] = code,
        },
    };
}
