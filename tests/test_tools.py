"""Function calling: the session's answer as a call, its output in the conversation,
and the realtime protocol's events for both; on fakes, then on the real LM."""

from __future__ import annotations

import json
from typing import Any

import pytest

from duplex.commands import AddToolResult, AddUserText, Respond, SetTools
from duplex.events import (
    Error,
    Interrupted,
    ResponseAudio,
    ResponseDone,
    ResponseFunctionCall,
)
from duplex.tools import Tool, Tools
from server.realtime import RealtimeProtocol
from tests.fakes import Harness, ScriptedResponder
from tests.test_protocols import kinds, realtime, sent, turn_taken

QUESTION = [(0, 300, "what's"), (300, 500, "the"), (500, 700, "weather?")]
WEATHER = Tool(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = 'CALL get_weather {"city": "Paris"}'


def test_a_spoken_question_is_answered_with_a_call_and_then_from_its_output() -> None:
    h = Harness(QUESTION, answers=[CALL, "It is sunny in Paris."])
    h.session.handle(SetTools(Tools((WEATHER,))))
    h.run(3000)
    [call] = h.of(ResponseFunctionCall)
    assert isinstance(call, ResponseFunctionCall)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone) and done.status == "completed"
    assert h.of(ResponseAudio) == []  # a call is not spoken
    h.events += h.session.handle(AddToolResult(call.call_id, "sunny, 21 C"))
    h.events += h.session.handle(Respond())
    h.run(8000)
    assert [d.status for d in h.of(ResponseDone)] == ["completed", "completed"]
    assert h.lm.turns()[-2:] == [("tool", "sunny, 21 C"), ("assistant", "It is sunny in Paris.")]
    assert h.of(ResponseAudio)  # the second answer is spoken


def test_a_call_is_made_only_where_the_tools_allow_it() -> None:
    h = Harness(QUESTION, answers=[CALL])
    h.session.handle(SetTools(Tools((WEATHER,), choice="none")))
    h.run(3000)
    assert h.of(ResponseFunctionCall) == []
    assert h.lm.tools_seen[-1].active is False


def test_a_response_can_bring_its_own_tools() -> None:
    h = Harness([], answers=[CALL])
    h.run(400)
    h.events += h.session.handle(AddUserText("weather in Paris?"))
    h.events += h.session.handle(Respond(Tools((WEATHER,), choice="required")))
    h.run(1000)
    [call] = h.of(ResponseFunctionCall)
    assert isinstance(call, ResponseFunctionCall) and call.name == "get_weather"
    assert h.lm.tools_seen[-1].must_call


def test_a_function_output_waits_for_the_answer_in_progress() -> None:
    h = Harness(QUESTION)
    h.run(1400)
    [refused] = [e for e in h.session.handle(AddToolResult("c1", "x")) if isinstance(e, Error)]
    assert isinstance(refused, Error) and refused.code == "response_in_progress"


def test_an_engine_gets_the_tools_and_its_call_is_the_answer() -> None:
    engine = ScriptedResponder([CALL, "Sunny."])
    h = Harness(QUESTION, responder=engine)
    h.session.handle(SetTools(Tools((WEATHER,))))
    h.run(3000)
    [call] = h.of(ResponseFunctionCall)
    assert isinstance(call, ResponseFunctionCall) and call.call_id == "call_1"
    assert engine.tools_seen[0].tools == (WEATHER,)
    assert h.lm.turns()[-1] == ("assistant", "[call get_weather]")
    h.events += h.session.handle(AddToolResult(call.call_id, "sunny"))
    h.events += h.session.handle(Respond())
    h.run(8000)
    assert engine.requests[1][-1] == {"role": "tool", "content": "sunny"}


def test_a_barge_in_before_the_engine_returns_the_call_cancels_it() -> None:
    """A call is like speech that has not started: talked over, it is dropped."""
    engine = ScriptedResponder([CALL], lag_reads=200)
    words = [*QUESTION, (1400, 1700, "never"), (1700, 2000, "mind.")]
    h = Harness(words, responder=engine)
    h.session.handle(SetTools(Tools((WEATHER,))))
    h.run(4000)
    assert h.of(ResponseFunctionCall) == []
    assert h.of(Interrupted) and engine.stops >= 1
    assert h.of(ResponseDone)[0].status == "interrupted"


# the realtime protocol ---------------------------------------------------------------

WEATHER_JSON = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": WEATHER.parameters,
}


def call_event(ms: int, response_id: int = 1) -> ResponseFunctionCall:
    return ResponseFunctionCall(
        audio_ms=ms,
        clock_ms=float(ms),
        response_id=response_id,
        call_id="call_1",
        name="get_weather",
        arguments='{"city": "Paris"}',
    )


def done(ms: int, response_id: int = 1) -> ResponseDone:
    return ResponseDone(
        audio_ms=ms,
        clock_ms=float(ms),
        response_id=response_id,
        status="completed",
        played_ms=0,
        text="",
    )


def commands(wire: RealtimeProtocol, event: dict[str, Any]) -> list[Any]:
    return [a for a in wire.receive(json.dumps(event)) if not hasattr(a, "message")]


def test_realtime_tools_become_the_sessions_and_show_in_session_updated() -> None:
    wire = realtime()
    wire.opened()
    actions = wire.receive(
        json.dumps(
            {
                "type": "session.update",
                "session": {"tools": [WEATHER_JSON], "tool_choice": "auto"},
            }
        )
    )
    [command] = [a for a in actions if isinstance(a, SetTools)]
    assert command == SetTools(Tools((WEATHER,), "auto"))
    [updated] = sent(actions)
    assert updated["session"]["tools"] == [WEATHER_JSON]
    forced = {"tool_choice": {"type": "function", "name": "get_weather"}}
    [respond] = commands(wire, {"type": "response.create", "response": forced})
    assert respond == Respond(Tools((WEATHER,), "get_weather"))


def test_realtime_bad_tools_are_errors_naming_the_field() -> None:
    wire = realtime()
    wire.opened()
    for session, param in [
        ({"tools": [{"type": "file_search"}]}, "session.tools[0]"),
        ({"tools": [{"type": "function", "parameters": {}}]}, "session.tools[0]"),
        ({"tools": [WEATHER_JSON], "tool_choice": "sometimes"}, "session.tool_choice"),
    ]:
        [error] = sent(wire.receive(json.dumps({"type": "session.update", "session": session})))
        assert error["type"] == "error" and error["error"]["param"] == param


def test_realtime_a_call_is_a_function_call_item_and_its_output_an_item() -> None:
    wire = realtime()
    wire.opened()
    actions = wire.events([turn_taken(1000), call_event(1050), done(1060)])
    assert kinds(actions) == [
        "response.created",
        "conversation.item.added",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    final = sent(actions)[-1]["response"]
    [item] = final["output"]
    assert item["type"] == "function_call" and item["call_id"] == "call_1"
    assert json.loads(item["arguments"]) == {"city": "Paris"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "sunny"}'}
    actions = wire.receive(json.dumps({"type": "conversation.item.create", "item": output}))
    assert kinds(actions) == ["conversation.item.added", "conversation.item.done"]
    added = sent(actions)[0]["item"]["id"]
    assert AddToolResult("call_1", '{"sky": "sunny"}', added) in actions
    unknown = {**output, "call_id": "call_9"}
    [error] = sent(wire.receive(json.dumps({"type": "conversation.item.create", "item": unknown})))
    assert error["error"]["param"] == "item.call_id"


def test_realtime_call_events_parse_as_the_openai_sdk_types() -> None:
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    wire = realtime()
    messages = sent(wire.opened())
    messages += sent(wire.events([turn_taken(1000), call_event(1050), done(1060)]))
    output = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    messages += sent(wire.receive(json.dumps({"type": "conversation.item.create", "item": output})))
    for message in messages:
        adapter.validate_python(message)


# the in-process LM ------------------------------------------------------------------

TIMER = Tool(
    "set_timer",
    "Set a timer for a number of minutes.",
    {
        "type": "object",
        "properties": {
            "minutes": {"type": "integer"},
            "sound": {"type": "string", "enum": ["bell", "beep"]},
        },
        "required": ["minutes", "sound"],
    },
)


@pytest.fixture(scope="module")
def lm() -> Any:
    from duplex.config import Settings
    from models.lm import LlamaDuplexLM
    from models.weights import LM

    return LlamaDuplexLM(LM.resolve(), system_prompt=Settings().models.system_prompt)


def _answer(lm: Any, tools: Tools) -> tuple[Any, str, int]:
    """Begin an answer and write it to its end, four tokens a step: (call, words, steps)."""
    lm.begin_response(tools)
    text, done, steps = "", False, 0
    while not done:
        piece, done = lm.speak(4)
        text += piece
        steps += 1
    return lm.tool_call(), text, steps


def test_the_lm_writes_a_call_that_fits_the_schema_and_answers_from_its_output(lm: Any) -> None:
    lm.reset()
    lm.listen("Set a timer for ten minutes.")
    call, words, steps = _answer(lm, Tools((WEATHER, TIMER)))
    assert call is not None and call.name == "set_timer"
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["minutes"], int) and arguments["sound"] in ("bell", "beep")
    assert words == ""  # a call has no words
    assert steps > 3  # written a few tokens a step, as speech is: the loop never stalls
    lm.add_tool_result(call.call_id, "the timer is set")
    lm.begin_response(Tools((WEATHER, TIMER)))
    assert lm.tool_call() is None  # the answer after an output is words
    text, _ = lm.speak(12)
    assert text.strip()
    roles = [m["role"] for m in lm.messages()]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert lm.messages()[2]["tool_calls"][0]["id"] == call.call_id
    assert lm.messages()[3] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "the timer is set",
    }


def test_the_lm_calls_on_auto_only_when_the_words_name_a_tool(lm: Any) -> None:
    for question, wanted in [
        ("What's the weather like in Paris?", "get_weather"),
        ("Tell me a joke.", None),
    ]:
        lm.reset()
        lm.listen(question)
        call, _, _ = _answer(lm, Tools((WEATHER, TIMER)))
        assert (call.name if call else None) == wanted, question
    lm.reset()
    lm.listen("Tell me a joke.")
    call, _, _ = _answer(lm, Tools((WEATHER,), choice="required"))
    assert call is not None and isinstance(json.loads(call.arguments)["city"], str)


def test_a_call_cut_off_while_it_is_written_leaves_no_trace(lm: Any) -> None:
    """A barge-in while a call is written drops it: the cache holds an empty answer, as
    after speech cut before its first word; a cancelled draft leaves the user's turn open."""
    lm.reset()
    lm.listen("Set a timer for ten minutes.")
    before = list(lm.cache.tokens)
    lm.begin_response(Tools((TIMER,)))
    assert lm.speak(4) == ("", False)  # the note is read, the call begun
    lm.truncate("")
    assert lm.tool_call() is None
    assert lm.cache.text().endswith("ten minutes.<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n")
    lm.reset()
    lm.listen("Set a timer for ten minutes.")
    lm.begin_response(Tools((TIMER,)))
    lm.speak(4)
    lm.cancel_response()
    assert lm.cache.tokens == before
