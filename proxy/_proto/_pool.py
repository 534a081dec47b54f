"""The private descriptor pool that every generated module under proxy._proto registers into."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, descriptor_pool, message, reflection
from google.protobuf.internal import enum_type_wrapper

# The official tensorflow / tensorflow_serving modules register the same full names (tensorflow.TensorProto,
# tensorflow.serving.PredictRequest, ...) from the same file paths in the default pool, which rejects a
# second, different definition. A pool of our own lets both sets load in one process, as the tests need.
POOL = descriptor_pool.DescriptorPool()


def _message_class(module_name: str, desc: descriptor.Descriptor, prefix: str) -> type[message.Message]:
    """Create the class for desc and its nested messages, named as protoc's generated code names them."""
    namespace: dict[str, Any] = {
        name: _message_class(module_name, nested, f"{prefix}{desc.name}.")
        for name, nested in desc.nested_types_by_name.items()
    }
    namespace.update(DESCRIPTOR=desc, __module__=module_name, __qualname__=prefix + desc.name)
    metaclass = reflection.GeneratedProtocolMessageType
    cls: type[message.Message] = metaclass(desc.name, (message.Message,), namespace)
    return cls


def build_messages(file_desc: descriptor.FileDescriptor, module_name: str, module: dict[str, Any]) -> None:
    """Define a generated module's top-level enums, services and message classes in its namespace."""
    # Stands in for protobuf's builder.BuildTopDescriptorsAndMessages, which also records each class in the
    # default symbol database; under the pure-Python protobuf runtime that adds our descriptors to the default
    # pool under the official file names and breaks the official modules imported after ours.
    for name, enum_desc in file_desc.enum_types_by_name.items():
        module["_" + name.upper()] = enum_desc
        module[name] = enum_type_wrapper.EnumTypeWrapper(enum_desc)
        for value in enum_desc.values:
            module[value.name] = value.number
    for name, extension in file_desc.extensions_by_name.items():
        module[name.upper() + "_FIELD_NUMBER"] = extension.number
        module[name] = extension
    for name, service in file_desc.services_by_name.items():
        module["_" + name.upper()] = service
    for name, msg_desc in file_desc.message_types_by_name.items():
        module[name] = _message_class(module_name, msg_desc, "")
