"""Training windows: crops around each event, captioned from the strong labels they cover."""

from __future__ import annotations

from seap_model.data.manifest import Event, Reference, Scene
from seap_model.training.dataset import scene_windows

CAPTIONS = {"dog": "a dog barking", "bell": "a bell ringing"}


def scene() -> Scene:
    return Scene(
        id="train_0001",
        split="train",
        audio="a.wav",
        duration=4.16,
        caption="a dog barking and a bell ringing",
        events=[Event("dog", 0.0, 1.0, "d.flac"), Event("dog", 1.2, 2.0, "d.flac"), Event("bell", 2.6, 4.1, "b.flac")],
        references=[Reference("dog", "r_dog.wav", [(0.0, 1.0), (1.2, 2.0)]), Reference("bell", "r_bell.wav", [])],
    )


def test_windows_follow_events_and_their_labels():
    ids = {"": 0}
    # 0.16 s per latent column, 13-column windows (2.08 s) in a 26-column scene
    windows = scene_windows(
        scene(), 5, first_ref=10, width=13, total=26, col_seconds=0.16, captions=CAPTIONS, caption_ids=ids
    )
    assert [w.start for w in windows] == [0, 7, 13]
    first, second, third = windows
    assert first.scene == 5
    # [0, 2.08): only the dog -> the dog caption and the dog reference (numbered from first_ref)
    assert ids["a dog barking"] == first.caption and first.references == (10,)
    # [1.12, 3.2): dog then bell overlap the crop -> both captions and both references
    assert second.references == (10, 11)
    assert ids["a dog barking, then a bell ringing"] == second.caption  # dog ends at 2.0, bell starts at 2.6
    # the last window is clamped to the scene end and holds only the bell
    assert third.start + 13 == 26 and third.references == (11,)
    assert ids[""] == 0  # the empty caption stays index 0 (used for guidance dropout)


def test_window_without_surviving_reference_falls_back_to_the_scene_references():
    s = scene()
    s.references = [Reference("bell", "r_bell.wav", [])]
    windows = scene_windows(
        s, 0, first_ref=3, width=13, total=26, col_seconds=0.16, captions=CAPTIONS, caption_ids={"": 0}
    )
    assert windows[0].references == (3,)  # dog window: no dog reference, the bell one stands in
