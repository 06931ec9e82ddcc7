using LMCache.Testing;
using Microsoft.Playwright;

namespace LMCache.Controller.Tests;

/// <summary>The dashboard in a real headless browser: Debian's chromium driven by Playwright (never a downloaded browser).</summary>
[IntegrationTest]
public sealed class DashboardTests
{
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task The_dashboard_shows_both_instances_and_deletes_a_chunk()
    {
        if (!File.Exists(Chromium))
        {
            Assert.Skip($"{Chromium} is missing: install Debian's chromium package (scripts/test.sh does).");
        }
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a");
        var b = await cluster.AddInstanceAsync("instance-b");
        var prompt = Cluster.Prompt(512, start: 9);
        a.Serve(prompt);
        b.Serve(Cluster.Prompt(256, start: 77));
        await Cluster.WaitUntilAsync(async () => (await cluster.LookupAsync(prompt)).ContainsKey("instance-a"), "A in /lookup");
        var victim = a.Engine.GetChunkKeys(prompt)[1].Key.ToString();

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
            Timeout = 120_000,
        });
        var page = await browser.NewPageAsync();
        page.SetDefaultTimeout(60_000);
        page.Dialog += (_, dialog) => _ = dialog.DismissAsync();
        await page.GotoAsync(cluster.Controller.HttpAddress!.ToString());

        // Overview: both instances, with their CPU tier and a capacity bar.
        await Assertions.Expect(page.Locator("#instances tbody tr[data-instance='instance-a']")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#instances tbody tr[data-instance='instance-b']")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#instance-count")).ToHaveTextAsync("2");
        await Assertions.Expect(page.Locator("#instances tr[data-instance='instance-a'] .tier[data-tier='LocalCPUBackend']")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#connection")).ToHaveTextAsync("connected");

        // Chunk browser: pick instance A, find the chunk, delete it through the UI.
        await page.Locator("#chunk-instance").SelectOptionAsync("instance-a");
        var row = page.Locator($"#chunks tbody tr[data-key='{victim}']");
        await Assertions.Expect(row).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#chunks tbody tr")).ToHaveCountAsync(2);
        await row.Locator("button.delete").ClickAsync();
        await Assertions.Expect(row).ToHaveCountAsync(0);

        // Gone through the API and in the engine itself.
        var listed = await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a" });
        Assert.DoesNotContain(victim, listed["chunks"]!.AsArray().Select(c => (string)c!["key"]!));
        Assert.Single(listed["chunks"]!.AsArray());
        Assert.Equal(256, await a.Engine.LookupAsync(prompt, cancellationToken: TestContext.Current.CancellationToken));
    }
}
