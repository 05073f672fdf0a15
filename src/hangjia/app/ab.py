"""A/B tests between two versions of one model: who is sent where, and what the feedback says.

Routing (serve.ab): requests for `ab.model` (e.g. `domain`) go to `ab.candidate` (e.g. `domain@candidate`) for a
share `ab.share` of users, the rest to the model itself. A user is always sent to the same side: the side is a hash of
the salt and the request's `user` field, so it needs no state and holds across restarts and replicas. A request
without `user` stays on the model (it cannot be kept sticky). Every exchange records the version that answered, so
feedback counts against it.

The report (`hangjia ab report`) reads the exchanges and feedback of one model name per answering version: thumbs-up
rate, mean rating, wins in two-draft comparisons, abstention rate and latency, each with a 95% interval, and tests the
candidate against the model: thumbs-up and abstention rates by a two-proportion z-test, ratings by Welch's t-test,
head-to-head wins by an exact binomial test. A difference is significant at p < alpha (0.05).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hangjia.app.db.models import Exchange, Feedback
from hangjia.core.config import ABConfig
from hangjia.eval.abtest import mean_interval, two_proportions, welch, wilson, wins
from hangjia.eval.scoring import abstains


def bucket(salt: str, user: str) -> float:
    """A user's fixed place in [0, 1): the first 8 bytes of sha256(salt:user)."""
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(config: ABConfig | None, model: str, user: str | None) -> str:
    """The name that answers a request for `model` from `user`."""
    if config is None or model != config.model or not user or config.share <= 0:
        return model
    return config.candidate if bucket(config.salt, user) < config.share else model


@dataclass
class Arm:
    version: str
    exchanges: int = 0
    thumbs: list[bool] = field(default_factory=list)
    ratings: list[int] = field(default_factory=list)
    wins: int = 0
    duels: int = 0
    abstained: int = 0
    latencies: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        return {
            "version": self.version,
            "exchanges": self.exchanges,
            "thumbs_up": wilson(sum(self.thumbs), len(self.thumbs)).to_dict(),
            "rating": mean_interval(self.ratings).to_dict(),
            "wins": wilson(self.wins, self.duels).to_dict(),
            "abstention": wilson(self.abstained, self.exchanges).to_dict(),
            "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
            "latency_ms_mean": sum(latencies) / len(latencies) if latencies else None,
        }


def collect(session: Session, model: str, since: datetime | None = None) -> dict[str, Arm]:
    """Each version that answered requests for `model` (since `since`, when given), with what its exchanges got."""
    arms: dict[str, Arm] = {}
    version_of: dict[int, str] = {}
    query = select(Exchange).where(Exchange.model == model)
    if since is not None:
        query = query.where(Exchange.created_at >= since)
    for ex in session.scalars(query):
        arm = arms.setdefault(ex.model_version, Arm(ex.model_version))
        arm.exchanges += 1
        arm.abstained += abstains(ex.answer)
        arm.latencies.append(ex.latency_ms)
        version_of[ex.id] = ex.model_version
    if not version_of:
        return arms
    rows = session.scalars(select(Feedback).where(Feedback.exchange_id.in_(list(version_of))))
    for fb in rows:
        arm = arms[version_of[fb.exchange_id]]
        if fb.kind == "thumbs":
            arm.thumbs.append(bool(fb.thumbs))
        elif fb.kind == "rating":
            arm.ratings.append(fb.rating)
        elif fb.kind == "preference":
            chosen = version_of.get(fb.chosen_exchange_id)
            rejected = version_of.get(fb.rejected_exchange_id)
            if chosen and rejected and chosen != rejected:  # two samples of one version say nothing here
                arms[chosen].wins += 1
                arms[chosen].duels += 1
                arms[rejected].duels += 1
    return arms


def registry_names(session: Session) -> Callable[[str], str]:
    """What a served name answers with now, as the server resolves it (app/versions.py): `domain` → the production
    alias's `domain@N` (itself while there is none), `domain@ALIAS` → its `domain@N`, anything else itself. Exchanges
    record that concrete version, so this is how an A/B test's two names find their answers."""
    from hangjia.app.db.models import ModelAlias
    from hangjia.app.registry import alias_targets, concrete, has_registry

    if not has_registry(session.get_bind()):
        return lambda name: name
    targets = alias_targets(session.scalars(select(ModelAlias)))
    return lambda name: concrete(name, targets)


ONE_VERSION = "one version"  # report()'s verdict when both sides answer with the same version: nothing to compare


def report(session: Session, config: ABConfig, alpha: float = 0.05, since: datetime | None = None) -> dict[str, Any]:
    """The A/B report of `config.model` against `config.candidate` (each as the version it resolves to now), with a
    verdict; `since`: only the exchanges from then on (the test's period)."""
    arms = collect(session, config.model, since)
    resolve = registry_names(session)
    model_version, candidate_version = resolve(config.model), resolve(config.candidate)
    control = arms.get(model_version, Arm(model_version))
    candidate = arms.get(candidate_version, Arm(candidate_version))
    # Both sides one version (the test ended: --act moved an alias; or serve.ab names one version twice): no tests.
    same = model_version == candidate_version
    tests = (
        dict.fromkeys(("thumbs_up", "rating", "wins", "abstention"))
        if same
        else {
            "thumbs_up": two_proportions(
                sum(candidate.thumbs), len(candidate.thumbs), sum(control.thumbs), len(control.thumbs)
            ),
            "rating": welch(candidate.ratings, control.ratings),
            "wins": wins(candidate.wins, candidate.duels),
            "abstention": two_proportions(
                candidate.abstained, candidate.exchanges, control.abstained, control.exchanges
            ),
        }
    )
    better, worse = [], []
    for name, p in tests.items():
        # A change in abstentions is reported but judged by neither side: abstaining is right when the documents
        # do not say, wrong when they do, and the exchanges alone cannot tell which.
        if name == "abstention" or p is None or p >= alpha:
            continue
        sign = _direction(name, candidate, control)
        (better if sign > 0 else worse).append(name)
    verdict = (
        ONE_VERSION
        if same
        else "better"
        if better and not worse
        else "worse"
        if worse and not better
        else "mixed"
        if better
        else "no difference"
    )
    return {
        "model": config.model,
        "candidate": config.candidate,
        "versions": {"model": model_version, "candidate": candidate_version},
        "share": config.share,
        "alpha": alpha,
        "arms": [control.summary(), candidate.summary()],
        "others": [a.summary() for v, a in arms.items() if v not in (model_version, candidate_version)],
        "p_values": tests,
        "significant": {"better": better, "worse": worse},
        "verdict": verdict,
    }


def _mean(xs: list) -> float:
    return sum(xs) / len(xs)


def _direction(name: str, candidate: Arm, control: Arm) -> int:
    """+1 when the candidate's side of test `name` is the better one (a test only runs with both sides non-empty)."""
    if name == "thumbs_up":
        a, b = _mean(candidate.thumbs), _mean(control.thumbs)
    elif name == "rating":
        a, b = _mean(candidate.ratings), _mean(control.ratings)
    else:  # wins: the candidate's against its losses
        a, b = candidate.wins, candidate.duels - candidate.wins
    return 1 if a > b else -1


def act(report: dict[str, Any], registry, by: str) -> str | None:
    """What a significant result does when the two sides are registry versions (`domain@N`): the candidate's
    version becomes production when it is better; when it is worse, the candidate alias is pointed at production's
    version, which ends its share of the traffic (the history keeps both moves, and a rollback undoes either). What
    was done, in words, or None when nothing was (no significant difference, mixed, or not registry versions)."""
    model, candidate = report["versions"]["model"], report["versions"]["candidate"]
    versions = [name.partition("@")[2] for name in (model, candidate)]
    if report["verdict"] not in ("better", "worse") or not all(v.isdigit() for v in versions):
        return None
    ours, theirs = int(versions[0]), int(versions[1])
    alias = report["candidate"].partition("@")[2]
    if report["verdict"] == "better":
        registry.promote(theirs, by=by, note=f"A/B: significantly better than version {ours}")
        return f"promoted {candidate} to production (was version {ours})"
    registry.promote(ours, alias=alias, by=by, note=f"A/B stopped: version {theirs} significantly worse")
    return f"stopped the test: {report['candidate']} now points at production's version {ours} (was {theirs})"
