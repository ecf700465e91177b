"""Any kb ChatBackend as a LangChain `BaseChatModel`, streaming included.

The chain code can then use LCEL (`prompt | model`) with kb's backends. Only the three plain
roles map across (system, human, ai); tool calls and multi-modal content are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from kb.errors import ModelError
from kb.llm.base import ChatBackend, Message

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}
_GEN_KEYS = ("max_new_tokens", "temperature", "top_p")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else p.get("text", "") for p in content)


def to_messages(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages -> kb Messages."""
    out = []
    for m in messages:
        if m.type not in _ROLES:
            raise ModelError(f"LangChain message type {m.type!r} is not supported; use system, human or ai")
        out.append(Message(_ROLES[m.type], _text(m.content)))  # type: ignore[arg-type]
    return out


class KBChatModel(BaseChatModel):
    """A LangChain chat model that delegates to a kb ChatBackend."""

    backend: Any
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return f"kb-{self.backend.name}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": self.backend.name}

    def _gen(self, stop: list[str] | None, kwargs: dict) -> dict:
        gen = {k: kwargs[k] for k in _GEN_KEYS if k in kwargs}
        if "max_tokens" in kwargs:
            gen["max_new_tokens"] = kwargs["max_tokens"]
        return {**gen, "stop": stop}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for piece in self.backend.stream(to_messages(messages), **self._gen(stop, kwargs)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def get_num_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools=None) -> int:
        return self.backend.count_message_tokens(to_messages(messages))


def as_chat_model(backend: ChatBackend) -> BaseChatModel:
    """Wrap `backend` for LangChain."""
    return KBChatModel(backend=backend)
