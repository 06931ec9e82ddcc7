namespace LMCache.Inference.Templates.Jinja;

/// <summary>A template node.</summary>
internal abstract record Node;

internal sealed record TextNode(string Text) : Node;

internal sealed record OutputNode(Expr Value) : Node;

internal sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else) : Node;

internal sealed record ForNode(string[] Targets, Expr Iterable, Expr? Filter, List<Node> Body, List<Node>? Else) : Node;

internal sealed record SetNode(Expr Target, Expr Value) : Node;

internal sealed record SetBlockNode(string Name, List<Node> Body) : Node;

internal sealed record MacroNode(string Name, List<(string Name, Expr? Default)> Parameters, List<Node> Body) : Node;

internal sealed record CallBlockNode(Expr Call, List<Node> Body) : Node;

internal sealed record FilterBlockNode(string Filter, List<Expr> Args, List<Node> Body) : Node;

internal sealed record BlockNode(List<Node> Body) : Node;

internal sealed record BreakNode : Node;

internal sealed record ContinueNode : Node;

/// <summary>An expression.</summary>
internal abstract record Expr;

internal sealed record LiteralExpr(object? Value) : Expr;

internal sealed record NameExpr(string Name) : Expr;

internal sealed record AttrExpr(Expr Target, string Name) : Expr;

internal sealed record ItemExpr(Expr Target, Expr Key) : Expr;

internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step) : Expr;

internal sealed record CallExpr(Expr Target, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr;

internal sealed record FilterExpr(Expr Target, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr;

internal sealed record TestExpr(Expr Target, string Name, List<Expr> Args, bool Negated) : Expr;

internal sealed record UnaryExpr(string Op, Expr Operand) : Expr;

internal sealed record BinaryExpr(string Op, Expr Left, Expr Right) : Expr;

internal sealed record CompareExpr(Expr Left, List<(string Op, Expr Right)> Rest) : Expr;

internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else) : Expr;

internal sealed record ListExpr(List<Expr> Items) : Expr;

internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items) : Expr;
