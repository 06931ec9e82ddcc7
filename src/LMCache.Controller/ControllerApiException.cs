using LMCache.Core.Diagnostics;
using Microsoft.AspNetCore.Http;

namespace LMCache.Controller;

/// <summary>An HTTP API failure with its status code; written as <c>{"detail": message}</c>.</summary>
internal sealed class ControllerApiException(int statusCode, string message) : LMCacheException(message)
{
    public int StatusCode { get; } = statusCode;

    public static ControllerApiException BadRequest(string message) => new(StatusCodes.Status400BadRequest, message);

    public static ControllerApiException NotFound(string message) => new(StatusCodes.Status404NotFound, message);
}
