"""The operator backend: success is what a person watching the arm says, once per episode.

An operator's verdict is final either way (success or failure), unlike the oracle's or a
classifier's per-frame "not yet": the episode manager ends an episode on any verdict whose source is
`OPERATOR`. `OperatorLabels` checks a label against the running episode; an empty episode id means
"the running one", as the recorder's LabelEpisode treats an empty id as "the last one written".
"""

from __future__ import annotations

OPERATOR = "operator"  # SuccessSignal.source of an operator's verdict


class LabelError(ValueError):
    """A label that names no running episode, or one already labelled."""


class OperatorLabels:
    """The running episode and whether it has been labelled (one verdict per episode)."""

    source = OPERATOR
    observes = "operator"
    options: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.episode_id = ""  # the running episode; empty: none
        self.labelled: bool | None = None

    def hold_steps(self, task: str) -> int:
        """A person's verdict needs no hold: it is given once, deliberately."""
        return 1

    def start(self, episode_id: str) -> None:
        if episode_id != self.episode_id:
            self.episode_id, self.labelled = episode_id, None

    def end(self, episode_id: str) -> None:
        """The episode's result is out: later labels for it are refused."""
        if episode_id == self.episode_id:
            self.episode_id, self.labelled = "", None

    def label(self, episode_id: str, success: bool) -> str:
        """Accept a verdict for the running episode; returns its id. LabelError says why not."""
        if not self.episode_id:
            raise LabelError("no episode is running (labels apply to the running episode; "
                               "relabel a recorded one with the recorder's label_episode)")
        if episode_id and episode_id != self.episode_id:
            raise LabelError(f"episode {episode_id!r} is not the running episode {self.episode_id!r}")
        if self.labelled is not None:
            raise LabelError(f"episode {self.episode_id!r} is already labelled success={self.labelled}")
        self.labelled = success
        return self.episode_id
