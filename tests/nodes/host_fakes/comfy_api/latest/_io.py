"""Stand-in for `comfy_api.latest._io` (ComfyUI 0.3.64), the V3 node schema: the input/output types the pack
uses, `Schema` and its V1 description (what `GET /object_info` answers), `ComfyNode` as the executor calls it,
`NodeOutput`, `Hidden`. Constructors and `as_dict` are the real ones' (tests/integration/test_host_fakes_match.py
compares signatures and the pack's whole node descriptions with a real server); the rest of the real module
(dynamic, multi-typed and UI types, async execution, lazy inputs, node expansion) is absent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


def prune_dict(d):
    return {k: v for k, v in d.items() if v is not None}


class classproperty:
    def __init__(self, f):
        self.f = f

    def __get__(self, obj, owner):
        return self.f(owner)


class _IO_V3:
    Parent = None

    @property
    def io_type(self):
        return self.Parent.io_type


class Input(_IO_V3):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy}) | prune_dict(self.extra_dict)

    def get_io_type(self):
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, socketless=None,
                 widget_type=None, force_input=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self):
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self):
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self):
        return self.io_type


class ComfyTypeIO:
    io_type = None

    class Input(Input):
        pass

    class Output(Output):
        pass


def comfytype(io_type):
    """Binds `io_type` to the type and gives it its own Input/Output classes (their `Parent` is the type)."""

    def decorator(cls):
        for part in ("Input", "Output"):
            base = getattr(cls, part, None)
            if base is not None:
                setattr(cls, part, type(base.__name__, (base,), {"Parent": cls}))
        cls.io_type = io_type
        return cls

    return decorator


def Custom(io_type):
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        pass

    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     label_on=None, label_off=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on = label_on
            self.label_off = label_off

        def as_dict(self):
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                     force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None,
            })  # fmt: skip


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                   "round": self.round, "display": self.display_mode})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                     placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts

        def as_dict(self):
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                     default=None, control_after_generate=None, upload=None, image_folder=None, remote=None,
                     socketless=None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            if upload is not None or image_folder is not None or remote is not None:
                raise NotImplementedError("the stand-in has no upload, image_folder or remote combos")

        def as_dict(self):
            return super().as_dict() | prune_dict({"multiselect": self.multiselect, "options": self.options,
                                                   "control_after_generate": self.control_after_generate})


def _socket(io_type):  # a socket-only type of ComfyUI's (no widget)
    return comfytype(io_type=io_type)(type(io_type.title(), (ComfyTypeIO,), {}))


Image = _socket("IMAGE")
Latent = _socket("LATENT")
Conditioning = _socket("CONDITIONING")
Sigmas = _socket("SIGMAS")
Clip = _socket("CLIP")
Model = _socket("MODEL")
Vae = _socket("VAE")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    def __init__(self, unique_id, prompt, extra_pnginfo, dynprompt, auth_token_comfy_org, api_key_comfy_org,
                 **kwargs):
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt
        self.auth_token_comfy_org = auth_token_comfy_org
        self.api_key_comfy_org = api_key_comfy_org

    def __getattr__(self, key):
        return None

    @classmethod
    def from_dict(cls, d):
        d = d or {}
        return cls(**{h.name: d.get(h, None) for h in Hidden})


@dataclass
class NodeInfoV1:
    input: dict = None
    input_order: dict = None
    output: list = None
    output_is_list: list = None
    output_name: list = None
    output_tooltips: list = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: object = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


def add_to_dict_v1(i, input):
    key = "optional" if i.optional else "required"
    as_dict = i.as_dict()
    as_dict.pop("optional", None)
    input.setdefault(key, {})[i.id] = (i.get_io_type(), as_dict)


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or []]
        if len(set(ins)) != len(ins) or len(set(outs)) != len(outs) or set(ins) & set(outs):
            raise ValueError(f"input and output ids must be unique, inputs {ins}, outputs {outs}")

    def finalize(self):
        if self.is_api_node:
            raise NotImplementedError("the stand-in has no API nodes")
        if self.is_output_node:
            self.hidden = self.hidden if self.hidden is not None else []
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self, cls):
        input = {"required": {}}
        for i in self.inputs or []:
            add_to_dict_v1(i, input)
        for hidden in self.hidden or []:
            input.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        outs = self.outputs or []
        return NodeInfoV1(
            input=input,
            input_order={key: list(value) for key, value in input.items()},
            output=[o.io_type for o in outs],
            output_is_list=[o.is_output_list for o in outs],
            output_name=[o.display_name if o.display_name else o.io_type for o in outs],
            output_tooltips=[o.tooltip if o.tooltip else None for o in outs],
            name=self.node_id,
            display_name=self.display_name,
            category=self.category,
            description=self.description,
            output_node=self.is_output_node,
            deprecated=self.is_deprecated,
            experimental=self.is_experimental,
            api_node=self.is_api_node,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        )


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """V3 node base: the executor calls `EXECUTE_NORMALIZED` on a clone of the class carrying `hidden`
    (`PREPARE_CLASS_CLONE`); the V1 attributes come from the schema."""

    RELATIVE_PYTHON_MODULE = None
    hidden = None  # a HiddenHolder on the clone the executor runs

    @classmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def FINALIZE_SCHEMA(cls):
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls):
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls, include_hidden=True, return_schema=False):
        schema = cls.FINALIZE_SCHEMA()
        input = schema.get_v1_info(cls).input
        if not include_hidden:
            input.pop("hidden", None)
        return (input, schema) if return_schema else input

    @classmethod
    def GET_NODE_INFO_V1(cls):
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))

    FUNCTION = "EXECUTE_NORMALIZED"  # a classproperty in ComfyUI ("EXECUTE_NORMALIZED_ASYNC" for async execute)
    DESCRIPTION = classproperty(lambda cls: cls.GET_SCHEMA().description)
    CATEGORY = classproperty(lambda cls: cls.GET_SCHEMA().category)
    OUTPUT_NODE = classproperty(lambda cls: cls.GET_SCHEMA().is_output_node)
    RETURN_TYPES = classproperty(lambda cls: [o.io_type for o in cls.GET_SCHEMA().outputs or []])
    RETURN_NAMES = classproperty(lambda cls: cls.GET_NODE_INFO_V1()["output_name"])
    OUTPUT_TOOLTIPS = classproperty(lambda cls: cls.GET_NODE_INFO_V1()["output_tooltips"])
    OUTPUT_IS_LIST = classproperty(lambda cls: cls.GET_NODE_INFO_V1()["output_is_list"])

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs):
        return type(f"{cls.__name__}Clone", (cls,), {"hidden": HiddenHolder.from_dict(hidden_inputs)})

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args, **kwargs):
        out = cls.execute(*args, **kwargs)
        if out is None:
            return NodeOutput()
        if isinstance(out, tuple):
            return NodeOutput(*out)
        if not isinstance(out, NodeOutput):  # ComfyUI 0.3.64's NodeOutput.from_dict fails on a dict: return NodeOutput
            raise TypeError(f"Invalid return type from node: {type(out)}")
        return out
