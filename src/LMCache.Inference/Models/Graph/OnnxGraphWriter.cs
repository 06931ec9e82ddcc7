using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace LMCache.Inference.Models.Graph;

/// <summary>
/// Accumulates an ONNX graph: inputs, outputs, nodes with unique names, small constants (stored in the proto) and
/// weight placeholders (external initializers whose data ONNX Runtime receives at session creation).
/// </summary>
internal sealed class OnnxGraphWriter
{
    private readonly HashSet<string> _constants = new(StringComparer.Ordinal);
    private int _unique;

    public OnnxGraphWriter(string name) => Graph = new GraphProto { Name = name };

    public GraphProto Graph { get; }

    /// <summary>A fresh value name with <paramref name="prefix"/>.</summary>
    public string Name(string prefix) => string.Create(CultureInfo.InvariantCulture, $"{prefix}_{_unique++}");

    public void Input(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Input.Add(ValueInfo(name, type, dims));

    public void Output(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Output.Add(ValueInfo(name, type, dims));

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d is string s
                ? new TensorShapeProto.Types.Dimension { DimParam = s }
                : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d, CultureInfo.InvariantCulture) });
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    /// <summary>Adds a node whose single output gets a fresh name; returns that name.</summary>
    public string Op(string op, params string[] inputs) => Op(op, inputs, []);

    /// <summary>Adds a node with attributes whose single output gets a fresh name; returns that name.</summary>
    public string Op(string op, string[] inputs, params (string Name, object Value)[] attributes)
    {
        var output = Name(op.ToLowerInvariant());
        Node(op, inputs, [output], attributes);
        return output;
    }

    /// <summary>Adds a node. Attribute values: long, long[], float, string; a (string, string) domain pair is not an attribute.</summary>
    public void Node(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes) =>
        Node(op, "", inputs, outputs, attributes);

    /// <summary>Adds a node of operator set <paramref name="domain"/>.</summary>
    public void Node(string op, string domain, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Domain = domain, Name = string.Create(CultureInfo.InvariantCulture, $"{op}_{Graph.Node.Count}") };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        foreach (var (name, value) in attributes)
        {
            node.Attribute.Add(value switch
            {
                long i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
                int i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
                long[] ints => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { ints } },
                float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
                string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
                _ => throw new ArgumentException($"Unsupported attribute value for '{name}'.", nameof(attributes)),
            });
        }
        Graph.Node.Add(node);
    }

    /// <summary>A float constant (stored in the proto; for small tensors only). Returns its name; equal names are added once.</summary>
    public string Floats(string name, float[] values, params long[] dims)
    {
        if (_constants.Add(name))
        {
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<float>(values)) };
            tensor.Dims.AddRange(dims);
            Graph.Initializer.Add(tensor);
        }
        return name;
    }

    /// <summary>A float scalar constant.</summary>
    public string Scalar(float value) => Floats(string.Create(CultureInfo.InvariantCulture, $"const_f_{BitConverter.SingleToInt32Bits(value):x8}"), [value]);

    /// <summary>An int64 vector constant.</summary>
    public string Int64s(params long[] values)
    {
        var name = "const_i_" + string.Join("_", values.Select(v => v.ToString(CultureInfo.InvariantCulture))).Replace('-', 'm');
        if (_constants.Add(name))
        {
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<long>(values)) };
            tensor.Dims.Add(values.Length);
            Graph.Initializer.Add(tensor);
        }
        return name;
    }

    /// <summary>An int64 scalar constant.</summary>
    public string Int64Scalar(long value)
    {
        var name = "const_s_" + value.ToString(CultureInfo.InvariantCulture).Replace('-', 'm');
        if (_constants.Add(name))
        {
            Graph.Initializer.Add(new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64, RawData = ByteString.CopyFrom(BitConverter.GetBytes(value)) });
        }
        return name;
    }

    /// <summary>
    /// Declares a weight stored as external data at <paramref name="offset"/> of the in-memory "file"
    /// <paramref name="file"/> (served to ONNX Runtime from native memory at session creation): the proto carries the
    /// name, type, shape and location but no bytes.
    /// </summary>
    public string Weight(string name, TensorProto.Types.DataType type, string file, long offset, long bytes, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type, DataLocation = TensorProto.Types.DataLocation.External };
        tensor.Dims.AddRange(dims);
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = file });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.ToString(CultureInfo.InvariantCulture) });
        Graph.Initializer.Add(tensor);
        return name;
    }
}
