"""The wire protocols alone: messages in, actions out; no socket, thread or event loop."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES
from duplex.commands import (
    AddMessage,
    AddUserText,
    Cancel,
    ClearInput,
    Commit,
    DeleteItem,
    Respond,
    SetAudioOutput,
    SetMaxTokens,
    SetPolicy,
    SetSpeed,
    Truncate,
    answer_item,
)
from duplex.config import PolicySettings
from duplex.events import (
    Error,
    Interrupted,
    ItemDeleted,
    ResponseAudio,
    ResponseDone,
    ResponseText,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptFinal,
    TurnMetrics,
    TurnTaken,
)
from duplex.metrics import TurnRecord
from duplex.tdm import FixedSilence
from server.protocol import SHUTTING_DOWN, Action, Audio, Listen, Send
from server.realtime import RealtimeProtocol, response_status, session_status
from server.stream import StreamProtocol


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, dict)]


def kinds(actions: list[Action]) -> list[str]:
    return [m["type"] for m in sent(actions)]


def turn_taken(ms: int, response_id: int = 1) -> TurnTaken:
    """The session took the turn at `ms`."""
    return TurnTaken(
        audio_ms=ms,
        clock_ms=float(ms),
        response_id=response_id,
        p_speak=0.9,
        silence_ms=200,
        required_silence_ms=190,
    )


def typed_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    """A client's conversation.item.create of a typed user message."""
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    return {
        "type": "conversation.item.create",
        "item": {"id": item_id, **item} if item_id else item,
    }


def realtime(beta: bool = False) -> RealtimeProtocol:
    return RealtimeProtocol(model="m", settings=PolicySettings(), beta=beta, session_id="s1")


def test_realtime_opens_the_input_at_24_khz_and_announces_the_session() -> None:
    actions = realtime().opened()
    assert actions[0] == Listen(24_000)
    [created] = sent(actions)
    assert created["type"] == "session.created" and created["session"]["id"] == "s1"


def test_realtime_client_events_become_commands() -> None:
    wire = realtime()
    wire.opened()
    pcm = np.arange(480, dtype="<i2").tobytes()
    append = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    assert wire.receive(json.dumps(append)) == [Audio(pcm)]
    assert Commit() in wire.receive('{"type": "input_audio_buffer.commit"}')
    clear = wire.receive('{"type": "input_audio_buffer.clear"}')
    assert clear[0] == ClearInput() and kinds(clear) == ["input_audio_buffer.cleared"]
    item = typed_item("hi")
    created = wire.receive(json.dumps(item))
    [added] = [m for m in sent(created) if m["type"] == "conversation.item.added"]
    assert created[0] == AddUserText("hi", echo=False, item=added["item"]["id"])
    assert kinds(created) == ["conversation.item.added", "conversation.item.done"]
    assert wire.receive('{"type": "response.create"}') == [Respond()]
    assert wire.receive('{"type": "response.cancel"}') == [Cancel()]
    update = {"type": "session.update", "session": {"turn_detection": {"type": "server_vad"}}}
    actions = wire.receive(json.dumps(update))
    assert isinstance(actions[0], SetPolicy) and isinstance(actions[0].policy, FixedSilence)
    assert kinds(actions) == ["session.updated"]


def test_realtime_bad_input_is_an_error_event_and_no_command() -> None:
    wire = realtime()
    wire.opened()
    bad: list[tuple[str | bytes, str]] = [
        ("not json", "invalid_json"),
        (b"\x00\x01", "binary_not_supported"),
        ('{"type": "nope", "event_id": "e1"}', "unknown_event"),
        ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_base64"),
    ]
    for message, code in bad:
        actions = wire.receive(message)
        [error] = sent(actions)
        assert len(actions) == 1 and error["type"] == "error", actions
        assert error["error"]["code"] == code
    [error] = sent(wire.receive('{"type": "nope", "event_id": "e1"}'))
    assert error["error"]["event_id"] == "e1"
    [full] = sent(wire.refused("too much audio waiting"))
    assert full["error"]["code"] == "input_audio_buffer_full"


def test_realtime_maps_an_answer_and_its_truncation() -> None:
    wire = realtime()
    wire.opened()
    pcm = np.full(FRAME_SAMPLES, 1000, np.int16)
    actions = wire.events(
        [
            TranscriptFinal(audio_ms=1000, clock_ms=1000.0, text="what time is it?"),
            turn_taken(1200),
            ResponseText(audio_ms=1200, clock_ms=1200.0, response_id=1, text="It is noon."),
            ResponseAudio(audio_ms=1200, clock_ms=1200.0, response_id=1, pcm=pcm, text=""),
            ResponseDone(
                audio_ms=2000,
                clock_ms=2000.0,
                response_id=1,
                status="completed",
                played_ms=800,
                text="It is noon.",
            ),
        ]
    )
    names = kinds(actions)
    assert "input_audio_buffer.committed" in names and names[-1] == "response.done"
    assert (
        "response.output_audio.delta" in names and "response.output_audio_transcript.delta" in names
    )
    [done] = [m for m in sent(actions) if m["type"] == "response.done"]
    item = done["response"]["output"][0]["id"]
    cut = {"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
           "audio_end_ms": 10}  # fmt: skip
    actions = wire.receive(json.dumps(cut))
    assert actions[0] == Truncate(10) and kinds(actions) == ["conversation.item.truncated"]
    [error] = sent(wire.receive(json.dumps({**cut, "audio_end_ms": 60_000})))
    assert error["error"]["code"] == "invalid_value"  # beyond the audio sent


def test_realtime_beta_names_and_a_closing_notice() -> None:
    wire = realtime(beta=True)
    wire.opened()
    pcm = np.full(FRAME_SAMPLES, 1000, np.int16)
    actions = wire.events(
        [
            turn_taken(0),
            *[  # the resampler's first output comes a few frames in
                ResponseAudio(audio_ms=ms, clock_ms=ms, response_id=1, pcm=pcm, text="")
                for ms in (0, 20, 40, 60)
            ],
        ]
    )
    assert "response.audio.delta" in kinds(actions)
    [closing] = sent(wire.closing(SHUTTING_DOWN))
    assert closing["type"] == "error" and closing["error"]["code"] == SHUTTING_DOWN.code


def stream() -> StreamProtocol:
    return StreamProtocol(session_id="s2", settings=PolicySettings())


def test_stream_waits_for_hello_then_takes_audio_and_control() -> None:
    wire = stream()
    assert wire.opened() == []
    [early] = sent(wire.receive(b"\x00\x00"))
    assert early["error"]["code"] == "audio_before_hello"
    hello = wire.receive(
        json.dumps({"type": "hello", "sample_rate": 48000, "policy": "silence-500ms"})
    )
    assert hello[0] == Listen(48000) and isinstance(hello[1], SetPolicy)
    [ready] = sent(hello)
    assert ready["type"] == "ready" and ready["session_id"] == "s2"
    assert wire.receive(b"\x01\x00\x02\x00") == [Audio(b"\x01\x00\x02\x00")]
    [odd] = sent(wire.receive(b"\x01\x00\x02"))
    assert odd["error"]["code"] == "invalid_audio"
    assert wire.receive('{"type": "text", "text": "hi"}') == [AddUserText("hi")]
    assert wire.receive('{"type": "respond"}') == [Respond()]
    assert wire.receive('{"type": "cancel"}') == [Cancel()]
    [twice] = sent(wire.receive('{"type": "hello"}'))
    assert twice["error"]["code"] == "hello_twice"
    [full] = sent(wire.refused("too much"))
    assert full["error"]["code"] == "input_full"


def test_stream_sends_audio_resampled_and_clears_on_a_barge_in() -> None:
    wire = stream()
    wire.receive(json.dumps({"type": "hello", "output_sample_rate": 16000}))
    pcm = np.full(FRAME_SAMPLES, 500, np.int16)
    actions = wire.events(
        [ResponseAudio(audio_ms=0, clock_ms=0.0, response_id=1, pcm=pcm, text="")]
    )
    [audio] = [a.message for a in actions if isinstance(a, Send)]
    assert audio == pcm.astype("<i2").tobytes()  # 16 kHz out: the samples as they are
    actions = wire.events(
        [
            Interrupted(
                audio_ms=40,
                clock_ms=40.0,
                response_id=1,
                stopped_ms=40,
                played_ms=20,
                played_text="",
                onset_ms=30,
            ),
            Error(audio_ms=40, clock_ms=40.0, code="model_error", message="boom"),
        ]
    )
    assert kinds(actions) == ["clear", "interrupted", "error"]
    assert sent(actions)[-1]["error"]["code"] == "model_error"


def test_a_response_status_survives_the_wire_both_ways() -> None:
    """The client reads a response's end with the server's own table (client/remote.py)."""
    for status in ("completed", "interrupted", "cancelled", "failed"):
        wire, details = response_status(status)
        assert session_status({"status": wire, "status_details": details}) == status


def test_typed_text_is_one_user_item_and_a_spoken_turn_reports_its_usage() -> None:
    """Text the client created is an item of its own, never committed again as audio
    (the session's TranscriptFinal has only the words it heard: none here, as for a
    bare response.create); a spoken turn's transcription event is one the openai SDK
    accepts, usage included."""
    from openai.types.realtime import ConversationItemInputAudioTranscriptionCompletedEvent

    wire = realtime()
    wire.opened()
    item = typed_item("hi")
    wire.receive(json.dumps(item))
    wire.receive('{"type": "response.create"}')
    bare = wire.events([TranscriptFinal(audio_ms=1000, clock_ms=1000.0, text="")])
    assert kinds(bare) == []
    spoken = wire.events(
        [
            SpeechStarted(audio_ms=500, clock_ms=500.0),
            TranscriptFinal(audio_ms=2000, clock_ms=2000.0, text="what time is it?"),
        ]
    )
    assert "input_audio_buffer.committed" in kinds(spoken)
    [done] = [m for m in sent(spoken) if m["type"].endswith("transcription.completed")]
    event = ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(done)
    assert event.transcript == "what time is it?" and event.usage.type == "duration"
    assert done["usage"]["seconds"] == 1.5


def test_response_metadata_is_echoed_on_the_answer_it_starts() -> None:
    """Clients match response.created to their response.create by its metadata."""
    wire = realtime()
    wire.opened()
    create = {"type": "response.create", "response": {"metadata": {"client_event_id": "c1"}}}
    assert wire.receive(json.dumps(create)) == [Respond()]
    taken = turn_taken(0)
    [created] = [m for m in sent(wire.events([taken])) if m["type"] == "response.created"]
    assert created["response"]["metadata"] == {"client_event_id": "c1"}
    later = turn_taken(9, 2)
    [next_one] = [m for m in sent(wire.events([later])) if m["type"] == "response.created"]
    assert next_one["response"]["metadata"] is None  # a turn the policy took: none
    bad = {"type": "response.create", "response": {"metadata": {"n": 1}}}
    [error] = sent(wire.receive(json.dumps(bad)))
    assert error["error"]["param"] == "response.metadata"


def test_items_can_be_retrieved_and_the_output_buffer_cleared() -> None:
    wire = realtime()
    wire.opened()
    item = typed_item("hi", "u1")
    wire.receive(json.dumps(item))
    [retrieved] = sent(wire.receive('{"type": "conversation.item.retrieve", "item_id": "u1"}'))
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    [missing] = sent(wire.receive('{"type": "conversation.item.retrieve", "item_id": "x"}'))
    assert missing["error"]["code"] == "item_not_found"
    cleared = wire.receive('{"type": "output_audio_buffer.clear"}')
    assert cleared[0] == Cancel() and kinds(cleared) == ["output_audio_buffer.cleared"]


def test_our_own_events_go_only_to_a_client_that_asks() -> None:
    metrics = TurnMetrics(audio_ms=0, clock_ms=0.0, record=TurnRecord(1))
    assert kinds(realtime().events([metrics])) == []
    asks = RealtimeProtocol(
        model="m", settings=PolicySettings(), beta=False, session_id="s", extensions=True
    )
    assert kinds(asks.events([metrics])) == ["duplex.turn_metrics"]


def test_every_realtime_event_parses_as_the_openai_sdk_types() -> None:
    """Schema conformance by the SDK clients validate against (`openai.types.realtime`):
    a field the API requires cannot go missing unnoticed."""
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    wire = realtime()
    out = wire.opened()
    update = {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
    out += wire.receive(json.dumps(update))
    limits = {"max_output_tokens": 30, "audio": {"input": {"transcription": None}}}
    out += wire.receive(json.dumps({"type": "session.update", "session": limits}))
    note = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "x"}]}
    out += wire.receive(json.dumps({"type": "conversation.item.create", "item": note}))
    item = typed_item("hi")
    out += wire.receive(json.dumps(item))
    out += wire.receive('{"type": "nope"}')
    out += wire.receive('{"type": "input_audio_buffer.clear"}')
    pcm = np.full(FRAME_SAMPLES, 1000, np.int16)
    out += wire.events(
        [
            SpeechStarted(audio_ms=500, clock_ms=0.0),
            TranscriptDelta(audio_ms=600, clock_ms=0.0, text="what"),
            SpeechStopped(audio_ms=900, clock_ms=0.0),
            TranscriptFinal(audio_ms=1000, clock_ms=0.0, text="what time"),
            turn_taken(1000),
            ResponseText(audio_ms=1000, clock_ms=0.0, response_id=1, text="It is"),
            *[
                ResponseAudio(audio_ms=ms, clock_ms=0.0, response_id=1, pcm=pcm, text="It is")
                for ms in range(1000, 1100, 20)
            ],
            Interrupted(
                audio_ms=1200,
                clock_ms=0.0,
                response_id=1,
                played_ms=100,
                played_text="It",
                onset_ms=1150,
                stopped_ms=1200,
            ),
            ResponseDone(
                audio_ms=1200,
                clock_ms=0.0,
                response_id=1,
                status="interrupted",
                played_ms=100,
                text="It",
            ),
            Error(audio_ms=1300, clock_ms=0.0, code="model_error", message="x"),
        ]
    )
    out += wire.receive('{"type": "conversation.item.retrieve", "item_id": "item_0001"}')
    out += wire.closing(SHUTTING_DOWN)
    events = sent(out)
    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    for message in events:
        adapter.validate_python(message)
    assert len(events) > 25 and {"response.done", "error"} <= {m["type"] for m in events}


def test_text_output_per_response_or_session_is_output_text_events() -> None:
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    wire = realtime()
    out = wire.opened()
    text_only = {"type": "response.create", "response": {"output_modalities": ["text"]}}
    actions = wire.receive(json.dumps(text_only))
    assert Respond(None, False) in actions
    answer = [
        turn_taken(1000),
        ResponseText(audio_ms=1000, clock_ms=0.0, response_id=1, text="It is noon."),
        ResponseDone(
            audio_ms=1100, clock_ms=0.0, response_id=1, status="completed", played_ms=0,
            text="It is noon.",
        ),
    ]  # fmt: skip
    out += wire.events(answer)
    names = kinds(out)
    assert "response.output_text.delta" in names and "response.output_text.done" in names
    assert not [n for n in names if "audio" in n]
    [final] = [m for m in sent(out) if m["type"] == "response.done"]
    assert final["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "It is noon."}
    ]
    update = {"type": "session.update", "session": {"output_modalities": ["text"]}}
    actions = wire.receive(json.dumps(update))
    assert SetAudioOutput(False) in actions
    assert sent(actions)[0]["session"]["output_modalities"] == ["text"]
    beta = realtime(beta=True)
    beta.opened()
    bad = {"type": "session.update", "session": {"modalities": ["video"]}}
    [error] = sent(beta.receive(json.dumps(bad)))
    assert error["error"]["param"] == "session.modalities"
    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    for message in sent(out) + sent(actions):
        adapter.validate_python(message)


def test_cancelling_when_nothing_is_live_is_an_error() -> None:
    wire = realtime()
    wire.opened()
    [error] = sent(wire.receive('{"type": "response.cancel"}'))
    assert error["error"]["code"] == "response_cancel_not_active"
    wire.receive('{"type": "response.create"}')
    assert Cancel() in wire.receive('{"type": "response.cancel"}')  # asked, not begun yet
    wire.events([turn_taken(1000)])
    assert Cancel() in wire.receive('{"type": "response.cancel"}')


def test_per_response_instructions_reach_the_session() -> None:
    wire = realtime()
    wire.opened()
    create = {"type": "response.create", "response": {"instructions": "Say hello."}}
    assert Respond(None, None, "Say hello.") in wire.receive(json.dumps(create))
    bad = {"type": "response.create", "response": {"instructions": 3}}
    [error] = sent(wire.receive(json.dumps(bad)))
    assert error["error"]["param"] == "response.instructions"


def test_a_manual_commit_is_acknowledged_at_once_and_only_once() -> None:
    wire = realtime()
    wire.opened()
    actions = wire.receive('{"type": "input_audio_buffer.commit"}')
    assert Commit() in actions and kinds(actions) == ["input_audio_buffer.committed"]
    [committed] = sent(actions)
    out = wire.events(
        [TranscriptFinal(audio_ms=1000, clock_ms=0.0, text="what time"), turn_taken(1000)]
    )
    assert "input_audio_buffer.committed" not in kinds(out)
    [added] = [m for m in sent(out) if m["type"] == "conversation.item.added"]
    assert added["item"]["id"] == committed["item_id"]


def _update(wire: RealtimeProtocol, session: dict[str, Any]) -> list[dict[str, Any]]:
    return sent(wire.receive(json.dumps({"type": "session.update", "session": session})))


def _error(messages: list[dict[str, Any]]) -> dict[str, Any]:
    [error] = [m["error"] for m in messages if m["type"] == "error"]
    assert isinstance(error, dict)
    return error


def test_session_fields_it_cannot_honour_are_errors_that_name_them() -> None:
    """What the runtime cannot do is refused by name, and nothing of that update is
    applied; what clients send by default (an API voice, a transcription model) is
    taken and the session says what is used."""
    wire = realtime()
    wire.opened()
    default = {
        "audio": {
            "input": {"transcription": {"model": "gpt-4o-mini-transcribe"}},
            "output": {"voice": "ash"},
        }
    }
    [updated] = _update(wire, default)
    assert updated["session"]["audio"]["output"]["voice"] == "joe"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "whisper"
    refused = {
        "session.type": {"type": "transcription"},
        "session.audio.output.voice": {"audio": {"output": {"voice": "nova-custom"}}},
        "session.audio.output.speed": {"audio": {"output": {"speed": 1.6}}},
        "session.speed": {"speed": 0.2},
        "session.audio.input.transcription.language": {
            "audio": {"input": {"transcription": {"language": "fr"}}}
        },
        "session.audio.input.transcription.prompt": {
            "audio": {"input": {"transcription": {"prompt": "names: Anna"}}}
        },
        "session.audio.input.turn_detection.create_response": {
            "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": 0}}}
        },
        "session.audio.input.turn_detection.interrupt_response": {
            "audio": {
                "input": {"turn_detection": {"type": "semantic_vad", "interrupt_response": "no"}}
            }
        },
        "session.max_output_tokens": {"max_output_tokens": 0},
    }
    for param, session in refused.items():
        out = wire.receive(json.dumps({"type": "session.update", "session": session}))
        assert kinds(out) == ["error"] and _error(sent(out))["param"] == param, param


def test_transcription_off_sends_no_transcription_events() -> None:
    wire = realtime()
    wire.opened()
    _update(wire, {"audio": {"input": {"transcription": None}}})
    out = wire.events(
        [
            SpeechStarted(audio_ms=500, clock_ms=0.0),
            TranscriptDelta(audio_ms=600, clock_ms=0.0, text="what"),
            TranscriptFinal(audio_ms=1000, clock_ms=0.0, text="what time"),
        ]
    )
    assert not [k for k in kinds(out) if "transcription" in k]
    assert "conversation.item.added" in kinds(out)  # the user's item still comes


def test_answer_length_per_session_and_per_response() -> None:
    wire = realtime()
    wire.opened()
    out = wire.receive(json.dumps({"type": "session.update", "session": {"max_output_tokens": 20}}))
    assert SetMaxTokens(20) in out and sent(out)[0]["session"]["max_output_tokens"] == 20
    assert SetMaxTokens(None) in wire.receive(
        json.dumps({"type": "session.update", "session": {"max_output_tokens": "inf"}})
    )
    create = {"type": "response.create", "response": {"max_output_tokens": 5}}
    assert Respond(max_tokens=5) in wire.receive(json.dumps(create))


def test_system_and_assistant_items_join_the_history() -> None:
    wire = realtime()
    wire.opened()
    system = {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": "Speak French."}],
    }
    assistant = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Bonjour."}],
    }
    for item, role, text in (
        (system, "system", "Speak French."),
        (assistant, "assistant", "Bonjour."),
    ):
        out = wire.receive(json.dumps({"type": "conversation.item.create", "item": item}))
        assert out[0] == AddMessage(role, text, sent(out)[0]["item"]["id"])
        assert kinds(out) == ["conversation.item.added", "conversation.item.done"]
    audio = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": "AAAA"}],
    }
    error = _error(
        sent(wire.receive(json.dumps({"type": "conversation.item.create", "item": audio})))
    )
    assert error["code"] == "unsupported_content" and "input_audio_buffer" in error["message"]


def test_an_item_is_deleted_once_the_session_has_taken_it_out() -> None:
    """Every item goes to the session under the name the conversation keeps it by (the
    client's id for the items it created, the session's for heard words and answers);
    `conversation.item.deleted` follows the session's word, and the item is gone."""
    from openai.types.realtime import ConversationItemDeletedEvent

    wire = realtime()
    wire.opened()
    wire.receive(json.dumps(typed_item("hi", "u1")))
    spoken = wire.events(
        [
            SpeechStarted(audio_ms=500, clock_ms=0.0),
            TranscriptFinal(audio_ms=1000, clock_ms=0.0, text="what time", item="duplex-user-1"),
            turn_taken(1000),
            ResponseText(audio_ms=1000, clock_ms=0.0, response_id=1, text="Noon."),
            ResponseDone(
                audio_ms=1500, clock_ms=0.0, response_id=1, status="completed", played_ms=0,
                text="Noon.",
            ),
        ]
    )  # fmt: skip
    added = [m["item"]["id"] for m in sent(spoken) if m["type"] == "conversation.item.added"]
    user_id, answer_id = added
    for item_id, name in (("u1", "u1"), (user_id, "duplex-user-1"), (answer_id, answer_item(1))):
        delete = {"type": "conversation.item.delete", "item_id": item_id}
        assert wire.receive(json.dumps(delete)) == [DeleteItem(name)]  # nothing sent yet
        [deleted] = sent(wire.events([ItemDeleted(audio_ms=2000, clock_ms=0.0, item=name)]))
        assert ConversationItemDeletedEvent.model_validate(deleted).item_id == item_id
        retrieve = {"type": "conversation.item.retrieve", "item_id": item_id}
        assert _error(sent(wire.receive(json.dumps(retrieve))))["code"] == "item_not_found"
    truncate = {"type": "conversation.item.truncate", "item_id": answer_id, "audio_end_ms": 0}
    assert _error(sent(wire.receive(json.dumps(truncate))))["code"] == "item_not_found"
    missing = {"type": "conversation.item.delete", "item_id": "nope"}
    error = _error(sent(wire.receive(json.dumps(missing))))
    assert (error["code"], error["param"]) == ("item_not_found", "item_id")
    created = wire.receive(json.dumps(typed_item("again")))
    [again] = [m for m in sent(created) if m["type"] == "conversation.item.added"]
    assert again["previous_item_id"] is None  # the conversation is empty again


def test_turn_detection_may_leave_answers_to_the_client_and_never_interrupt() -> None:
    """`create_response: false`: turns are detected and committed, answers wait for
    response.create; `interrupt_response: false`: answers play out. Both reach the
    session's policy, for either kind of detection."""
    wire = realtime()
    wire.opened()
    for kind in ("semantic_vad", "server_vad"):
        turn = {"type": kind, "create_response": False, "interrupt_response": False}
        out = wire.receive(
            json.dumps({"type": "session.update", "session": {"turn_detection": turn}})
        )
        [policy] = [a.policy for a in out if isinstance(a, SetPolicy)]
        assert (policy.answers, policy.yields) == (False, False)
        assert sent(out)[0]["session"]["audio"]["input"]["turn_detection"] == turn
    only = {"type": "semantic_vad", "interrupt_response": False}
    out = wire.receive(json.dumps({"type": "session.update", "session": {"turn_detection": only}}))
    [policy] = [a.policy for a in out if isinstance(a, SetPolicy)]
    assert (policy.answers, policy.yields) == (True, False)


def test_answers_are_spoken_at_the_speed_asked_within_the_api_range() -> None:
    wire = realtime()
    wire.opened()
    out = wire.receive(
        json.dumps({"type": "session.update", "session": {"audio": {"output": {"speed": 1.5}}}})
    )
    assert SetSpeed(1.5) in out and sent(out)[0]["session"]["audio"]["output"]["speed"] == 1.5
    beta = realtime(beta=True)
    beta.opened()
    out = beta.receive(json.dumps({"type": "session.update", "session": {"speed": 0.25}}))
    assert SetSpeed(0.25) in out and sent(out)[0]["session"]["speed"] == 0.25
    for speed in (0.2, 1.6, "fast", True):
        bad = {"type": "session.update", "session": {"speed": speed, "instructions": "x"}}
        out = beta.receive(json.dumps(bad))
        assert kinds(out) == ["error"] and _error(sent(out))["code"] == "invalid_value"
        assert _error(sent(out))["param"] == "session.speed"


def test_a_beta_client_gets_the_session_in_the_beta_shape() -> None:
    [created] = sent(realtime(beta=True).opened())
    session = created["session"]
    assert session["modalities"] == ["audio", "text"] and session["voice"] == "joe"
    assert session["input_audio_format"] == "pcm16" and "audio" not in session
    assert session["turn_detection"]["type"] == "semantic_vad"


def test_out_of_band_responses_are_refused_by_name() -> None:
    wire = realtime()
    wire.opened()
    for response, param in (
        ({"conversation": "none"}, "response.conversation"),
        ({"input": []}, "response.input"),
    ):
        out = wire.receive(json.dumps({"type": "response.create", "response": response}))
        assert kinds(out) == ["error"] and _error(sent(out))["param"] == param


def test_a_response_create_over_an_answer_gets_the_apis_code() -> None:
    """pipecat's realtime client ends its connection at an error but the few it expects;
    a response.create over an answer is one of those: the API's code, not the session's.
    An item refused over an answer keeps the session's code."""
    wire = realtime()
    wire.opened()
    wire.events([turn_taken(0)])
    assert wire.receive('{"type": "response.create"}') == [Respond()]
    busy = Error(audio_ms=10, clock_ms=10.0, code="response_in_progress", message="busy")
    [error] = sent(wire.events([busy]))
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["type"] == "invalid_request_error"
    refused = Error(audio_ms=20, clock_ms=20.0, code="response_in_progress", message="later")
    [error] = sent(wire.events([refused]))  # an item's refusal: no response.create asked
    assert error["error"]["code"] == "response_in_progress"
