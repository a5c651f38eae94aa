"""What a client may change of a conversation on the fakes: an item leaves it, turns
wait for the client's `Respond`, answers play out whatever the user says, and the
voice speaks faster or slower.

The timeline is test_session.py's: VAD onset after 60 ms voiced, end after 200 ms
unvoiced; a word revealed 160 ms after its end; 200 ms of tone per word.
"""

from __future__ import annotations

from duplex.commands import (
    AddMessage,
    AddUserText,
    DeleteItem,
    Respond,
    SetPolicy,
    SetSpeed,
    answer_item,
)
from duplex.events import (
    Error,
    Interrupted,
    ItemDeleted,
    ResponseAudio,
    ResponseDone,
    TranscriptFinal,
    TurnTaken,
)
from duplex.tdm import State, TurnPolicy
from tests.fakes import ANSWER, QUESTION, Harness, ScriptedResponder


def test_a_deleted_item_leaves_the_lm_and_the_engines_history() -> None:
    """Heard words, an answer, a system note and a typed message each leave by name,
    between answers; during one, deleting is refused and nothing leaves."""
    responder = ScriptedResponder([ANSWER, "Sunny."], lag_reads=0)
    h = Harness(QUESTION, responder=responder)
    h.run(6000)
    [final] = h.of(TranscriptFinal)
    assert final.item == "duplex-user-1"
    h.session.handle(AddMessage("system", "Speak French.", "note"))
    h.session.handle(AddUserText("and tomorrow?", echo=False, item="typed"))
    assert h.lm.turns() == [
        ("user", "what time is it?"),
        ("assistant", ANSWER),
        ("system", "Speak French."),
        ("user", "and tomorrow?"),
    ]
    for item in ("note", final.item, answer_item(1)):
        [deleted] = h.session.handle(DeleteItem(item))
        assert isinstance(deleted, ItemDeleted) and deleted.item == item
    assert h.lm.turns() == [("user", "and tomorrow?")]
    h.events += h.session.handle(Respond())
    assert responder.requests[-1] == [{"role": "user", "content": "and tomorrow?"}]
    [refused] = h.session.handle(DeleteItem("typed"))  # its answer is in progress
    assert isinstance(refused, Error) and refused.code == "response_in_progress"
    h.run(9000)
    h.session.handle(DeleteItem("typed"))
    assert h.lm.turns() == [("assistant", "Sunny.")]


def test_a_typed_item_amid_heard_words_is_a_message_of_its_own() -> None:
    """A typed item while the user speaks stands apart: the words heard before and
    after it are one item (one TranscriptFinal), in two turns of the LM, and leave
    together."""
    h = Harness(QUESTION)
    h.run(700)  # "what" is heard
    h.session.handle(AddUserText("hello", echo=False, item="typed"))
    h.run(6000)
    [final] = h.of(TranscriptFinal)
    assert (final.text, final.item) == ("what time is it?", "duplex-user-1")
    assert h.lm.turns() == [
        ("user", "what"),
        ("user", "hello"),
        ("user", "time is it?"),
        ("assistant", ANSWER),
    ]
    h.session.handle(DeleteItem(final.item))
    assert h.lm.turns() == [("user", "hello"), ("assistant", ANSWER)]


def test_turns_wait_for_the_clients_respond_when_the_policy_does_not_answer() -> None:
    """`answers` false: each turn's end is detected and its words committed, its own item
    in the conversation; nothing is drafted or answered until `Respond`."""
    words = [*QUESTION, (2000, 2300, "and"), (2300, 2700, "tomorrow?")]
    h = Harness(words)
    h.session.handle(SetPolicy(TurnPolicy(h.settings, answers=False)))
    h.run(5000)
    assert h.of(TurnTaken) == [] and h.lm.tools_seen == []  # no answer, not even a draft
    finals = h.of(TranscriptFinal)
    assert [(f.audio_ms, f.text, f.item) for f in finals] == [
        (1200, "what time is it?", "duplex-user-1"),
        (2900, "and tomorrow?", "duplex-user-2"),
    ]
    assert h.lm.turns() == [("user", "what time is it?"), ("user", "and tomorrow?")]
    h.events += h.session.handle(Respond())
    [taken] = h.of(TurnTaken)
    assert (taken.audio_ms, h.of(TranscriptFinal)[-1].text) == (5000, "")
    h.run(9000)
    [done] = h.of(ResponseDone)
    assert done.status == "completed" and h.lm.turns()[-1] == ("assistant", ANSWER)
    assert h.session.state is State.LISTENING


def test_an_answer_the_policy_does_not_yield_plays_out_and_the_words_come_next() -> None:
    """`yields` false: words over the answer neither hold nor stop it; they wait in
    OVERLAP for its end, then are the user's next turn, answered as one."""
    words = [*QUESTION, (2000, 2300, "wait,"), (2300, 2600, "stop.")]
    h = Harness(words)
    h.session.handle(SetPolicy(TurnPolicy(h.settings, yields=False)))
    states = []
    for ms in range(20, 9000, 20):
        h.run(ms)
        states.append(h.session.state)
    assert h.of(Interrupted) == []
    first = [e.audio_ms for e in h.of(ResponseAudio) if e.response_id == 1]
    assert first == list(range(1200, 4400, 20))  # all of it, not one frame held
    done = h.of(ResponseDone)
    assert [(d.status, d.text) for d in done] == [("completed", ANSWER)] * 2
    assert h.lm.turns() == [
        ("user", "what time is it?"),
        ("assistant", ANSWER),
        ("user", "wait, stop."),
        ("assistant", ANSWER),
    ]
    [_, taken] = h.of(TurnTaken)
    assert (taken.audio_ms, taken.silence_ms) == (4420, 1820)  # once the first one ended
    order = [s for i, s in enumerate(states) if i == 0 or s is not states[i - 1]]
    assert order == [
        State.LISTENING,
        State.SPEAKING,
        State.OVERLAP,
        State.LISTENING,
        State.SPEAKING,
        State.LISTENING,
    ]


def test_the_voice_speaks_at_the_speed_asked() -> None:
    h = Harness(QUESTION)
    h.session.handle(SetSpeed(1.25))
    h.run(6000)
    [done] = h.of(ResponseDone)
    # 16 words at 160 ms instead of 200: 3200 ms of answer in 2560
    assert (done.status, done.played_ms) == ("completed", 2560)
