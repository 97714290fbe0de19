"""Tiny real architectures from ``transformers`` configs (random weights, nothing downloaded) and awkward
modules for the graph tests."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 100


def bert() -> tuple[nn.Module, object]:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=VOCAB, max_position_embeddings=32, attn_implementation="eager")  # fmt: skip
    ids = torch.randint(0, VOCAB, (2, 8))
    return BertModel(cfg).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def gpt2(layers: int = 2, width: int = 32, device: str = "cpu") -> tuple[nn.Module, object]:
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(n_embd=width, n_layer=layers, n_head=2, vocab_size=VOCAB, n_positions=32, use_cache=False,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")  # fmt: skip
    with torch.device(device):
        model = GPT2Model(cfg).eval()
    return model, torch.randint(0, VOCAB, (2, 8), device=device)


def vit() -> tuple[nn.Module, object]:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8, attn_implementation="eager")  # fmt: skip
    return ViTModel(cfg).eval(), torch.randn(2, 3, 32, 32)


def resnet() -> tuple[nn.Module, object]:
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    return ResNetModel(cfg).eval(), torch.randn(2, 3, 32, 32)


def convnext() -> tuple[nn.Module, object]:
    from transformers import ConvNextConfig, ConvNextModel

    cfg = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    return ConvNextModel(cfg).eval(), torch.randn(2, 3, 32, 32)


ARCHITECTURES = {"bert": bert, "gpt2": gpt2, "vit": vit, "resnet": resnet, "convnext": convnext}


class DataDependent(nn.Module):
    """Branches and loops on tensor values: no tracer can follow it, forward hooks can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum() > 0:
            h = self.b(h)
        else:
            h = -self.b(-h)
        for _ in range(int(h.abs().max() > -1) + 1):  # two rounds, decided by a value
            h = torch.relu(h) + h
        return self.head(h)


class AlwaysFails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model refuses every input")


class Shared(nn.Module):
    """One ``Linear`` called twice, and a second name for it."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.alias = self.block
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(torch.relu(self.block(x))))


class ReusedReLU(nn.Module):
    """A residual block that applies its ReLU twice, as torchvision's BasicBlock does."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class DictAndTuple(nn.Module):
    """Takes a dict and returns a tuple with a dict inside."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(4, 3)
        self.right = nn.Linear(5, 3)

    def forward(self, batch: dict[str, torch.Tensor], scale: torch.Tensor) -> tuple[torch.Tensor, dict]:
        y = self.left(batch["a"]) + self.right(batch["b"])
        return y * scale, {"aux": y.sum(-1)}


def deep(depth: int = 60) -> nn.Module:
    module: nn.Module = nn.Linear(3, 3)
    for _ in range(depth):
        module = nn.Sequential(module, nn.ReLU())
    return module


WEIRD = "a<b>&\"c'"


def weird_names() -> nn.Module:
    m = nn.Sequential()
    m.add_module(WEIRD, nn.Linear(4, 4))
    m.add_module("ünï cödé", nn.ReLU())
    m.add_module("with space", nn.Linear(4, 2))
    return m


def synthetic_transformer(layers: int = 170):
    """A graph shaped like an exported GPT-2 (about 60 operations per block, residual edges, one mask feeding
    every block), built directly: collapse's speed does not depend on how a graph was obtained, and exporting
    a 10,000-node model takes half a minute here."""
    from deepscope.graphs.schema import Edge, Graph, ModuleInfo, Node

    sub = ["ln_1", "attn.c_attn", "attn.attn_dropout", "attn.c_proj", "attn.resid_dropout", "ln_2", "mlp.c_fc",
           "mlp.act", "mlp.c_proj", "mlp.dropout"]  # fmt: skip
    nodes = [Node("x", "x", "input", "x", "", "", output_shapes=((1, 8),)), Node("mask", "mask", "call_function",
             "aten.ones.default", "", "")]  # fmt: skip
    edges: list[Edge] = []
    modules = {"": ModuleInfo("", "GPT2Model", 0, None, ("h",)), "h": ModuleInfo("h", "ModuleList", 0, "", ())}
    prev = "x"
    for i in range(layers):
        block = f"h.{i}"
        residual = prev
        for j in range(60):
            owner = f"{block}.{sub[j // 6]}" if j < 60 - 3 else block  # the last three: residual adds in the block
            nid = f"op_{i}_{j}"
            nodes.append(Node(nid, nid, "call_function", "aten.add.Tensor", owner, ""))
            edges.append(Edge(prev, nid, (1, 8, 8), "float32"))
            if j == 20:
                edges.append(Edge("mask", nid, (1, 1, 8, 8), "float32"))
            if j == 59:
                edges.append(Edge(residual, nid, (1, 8, 8), "float32"))
            prev = nid
    nodes.append(Node("output", "output", "output", "output", "", ""))
    edges.append(Edge(prev, "output", (1, 8, 8), "float32"))
    paths = sorted({n.module_path for n in nodes} | {p.rpartition(".")[0] for n in nodes for p in [n.module_path]})
    for p in paths:
        while p and p not in modules:
            modules[p] = ModuleInfo(p, "Module", 0, p.rpartition(".")[0], ())
            p = p.rpartition(".")[0]
    return Graph(method="export", nodes=tuple(nodes), edges=tuple(edges), modules=tuple(modules.values()))
