"""A client of the service's rater (`curate serve --rater`, POST /v1/rate) with a rater's shape:
`.identity` and `.rate(docs)`. Batching, limits, retries and failures are the scoring client's."""
from __future__ import annotations

from pipeline.errors import UserError
from pipeline.rating.rater import RaterIdentity, cut_text, rating_row
from pipeline.scoring.client import ScoringClient


class RatingClient(ScoringClient):
    PATH = "/v1/rate"

    def _read_identity(self, info: dict) -> RaterIdentity:
        rater = info.get("rater")
        if not rater:
            raise UserError(f"the service at {self.base_url} has no rater: start it with `curate serve --rater`")
        identity = RaterIdentity.from_dict(rater)
        if rater.get("rater_id") != identity.rater_id:
            raise UserError(f"the service at {self.base_url} names its rater {rater.get('rater_id')} but this client "
                            f"computes {identity.rater_id}: run the same pipeline version on both sides")
        return identity

    def _cut(self, text: str) -> str:
        return cut_text(text, self.identity.text_tokens)

    def _limit_row(self, doc_id: str, n_bytes: int, reason: str) -> dict:
        return rating_row(doc_id, self.identity, None, error=reason)

    def rate(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.RATINGS` row per document out, in input order."""
        return self._process(docs)
