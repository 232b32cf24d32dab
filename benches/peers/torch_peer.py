"""The PyTorch side of shopcast's peer benchmark.

The same models, shapes, hyperparameters and operations as the Rust side
(`benches/benches/peers.rs`, which drives shopcast's real model code), written the way a
PyTorch user would write them:

- the recommender (`model/src/recommender.rs`): a customer's vector is an id embedding plus the
  weighted mean of attribute-token embeddings, a product's likewise; two-tower scores are dot
  products plus a product bias, NeuMF adds a GMF + MLP head; sampled binary cross-entropy with
  `k` negatives per positive plus the L2 term on the batch's vectors; Adam (eps 1e-5 as Burn's,
  PyTorch's fused CPU implementation);
- the forecaster (`model/src/forecaster.rs`): key embeddings appended to every step, an LSTM
  encoder over the context whose final state starts an LSTM decoder over the horizon, a linear
  head giving a correction to the anchor for the median and softplus gaps for the other
  quantiles, the pinball loss; Adam;
- the sequential recommender (`model/src/recommender/sequential.rs`): the two-tower tables plus a
  self-attention encoder over baskets (a slot reads only strictly earlier baskets), every
  purchase of a window a target, a softmax over negatives shared by the batch; Adam;
- batch scoring: customer vectors against the whole catalogue, bought products excluded, top-k.

Prints one JSON object: {"side": "pytorch", "device": ..., "threads": ..., "ops": {name: seconds}},
each figure the median of the timed repetitions after warm-up.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_seconds(fn, warmup, repeats, sync):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def adam(params, lr):
    # The fused implementation (one kernel per step for all parameters) is PyTorch's fastest on
    # CPU: the recommender step takes 3.8 ms with it against 6.5 ms with the default loop here.
    # eps as Burn's default.
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=1e-5, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=1e-5)


def ids(n, modulo, salt, device):
    # Same id pattern as the Rust side.
    i = torch.arange(n, dtype=torch.int64)
    return ((i * 7919 + salt * 104_729) % modulo).to(device)


# ----------------------------------------------------------------------------- recommender


class Recommender(nn.Module):
    def __init__(self, n_customers, n_products, n_customer_tokens, n_product_tokens, d,
                 architecture, mlp_layers=(64, 32)):
        super().__init__()
        self.customer_id = nn.Embedding(n_customers, d)
        self.product_id = nn.Embedding(n_products, d)
        self.customer_attribute = nn.Embedding(n_customer_tokens + 1, d)
        self.product_attribute = nn.Embedding(n_product_tokens + 1, d)
        self.product_bias = nn.Embedding(n_products, 1)
        for table in (self.customer_id, self.product_id, self.customer_attribute,
                      self.product_attribute):
            nn.init.normal_(table.weight, 0.0, 0.05)
        nn.init.zeros_(self.product_bias.weight)
        self.neumf = architecture == "neumf"
        if self.neumf:
            layers, d_in = [], 2 * d
            for h in mlp_layers:
                layers.append(nn.Linear(d_in, h))
                d_in = h
            self.mlp = nn.ModuleList(layers)
            self.output = nn.Linear(d + d_in, 1)

    def vectors(self, id_table, attr_table, ids_, tokens, weights):
        attr = (attr_table(tokens[ids_]) * weights[ids_].unsqueeze(2)).sum(1)
        return id_table(ids_) + attr

    def pair_scores(self, u, p):
        if not self.neumf:
            return (u * p).sum(-1)
        h = torch.cat([u, p], -1)
        for layer in self.mlp:
            h = F.relu(layer(h))
        return self.output(torch.cat([u * p, h], -1)).squeeze(-1)

    def batch_logits(self, customers, positives, negatives, k, cf, pf):
        u = self.vectors(self.customer_id, self.customer_attribute, customers, *cf)
        b, d = u.shape
        p = self.vectors(self.product_id, self.product_attribute, positives, *pf)
        n = self.vectors(self.product_id, self.product_attribute, negatives, *pf).view(b, k, d)
        pos = self.pair_scores(u, p) + self.product_bias(positives).squeeze(1)
        neg_bias = self.product_bias(negatives).view(b, k)
        if self.neumf:
            u_rep = u.unsqueeze(1).expand(b, k, d).reshape(b * k, d)
            neg = self.pair_scores(u_rep, n.reshape(b * k, d)).view(b, k) + neg_bias
        else:
            neg = (n * u.unsqueeze(1)).sum(2) + neg_bias
        norms = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
        return pos, neg, norms


def sampled_bce(pos, neg, weights):
    b, k = neg.shape
    pos_loss = (-F.logsigmoid(pos) * weights).sum()
    neg_loss = (F.softplus(neg).sum(1) * weights).sum()
    return (pos_loss + neg_loss) / (b * (k + 1))


def entity_features(n, tokens, width, device):
    i = torch.arange(n * width, dtype=torch.int64)
    padded = ((i * 31) % tokens + 1).view(n, width)
    weights = torch.full((n, width), 1.0 / width)
    return padded.to(device), weights.to(device)


def recommender_step(device, architecture, k, args, sync):
    n_c, n_p, tokens, b, d = 20_000, 5_000, 200, 1024, 32
    torch.manual_seed(1)
    model = Recommender(n_c, n_p, tokens, tokens, d, architecture).to(device)
    cf = entity_features(n_c, tokens, 4, device)
    pf = entity_features(n_p, tokens, 4, device)
    optim = adam(model.parameters(), 0.01)
    l2 = 1e-6
    batches = [
        (ids(b, n_c, s, device), ids(b, n_p, s + 1, device), ids(b * k, n_p, s + 2, device),
         torch.ones(b, device=device))
        for s in range(8)
    ]
    state = {"step": 0}

    def step():
        customers, positives, negatives, weights = batches[state["step"] % len(batches)]
        state["step"] += 1
        pos, neg, norms = model.batch_logits(customers, positives, negatives, k, cf, pf)
        loss = sampled_bce(pos, neg, weights) + norms * (l2 / b)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return median_seconds(step, 5, args.repeats, sync)


# ------------------------------------------------------------------- sequential recommender

SEQ = dict(windows=128, length=50, negatives=1024, d=64, blocks=2, heads=1, dropout=0.2,
           gap_buckets=12)


class SequenceBlock(nn.Module):
    """Pre-norm block: the query streams (slots, then completion queries) read the memory
    (slots of strictly earlier baskets; a completion query also its own basket but the item it
    predicts)."""

    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query_norm, self.memory_norm, self.ffn_norm = (nn.LayerNorm(d, eps=1e-5)
                                                            for _ in range(3))
        self.query, self.key, self.value, self.output = (nn.Linear(d, d) for _ in range(4))
        self.ffn_in, self.ffn_out = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, memory, may_read):
        b, tq, d = x.shape
        tk = memory.shape[1]
        split = lambda y, t: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        memory = self.memory_norm(memory)
        q = split(self.query(self.query_norm(x)), tq)
        k, v = split(self.key(memory), tk), split(self.value(memory), tk)
        p = self.dropout if self.training else 0.0
        read = F.scaled_dot_product_attention(q, k, v, attn_mask=may_read, dropout_p=p)
        read = read.transpose(1, 2).reshape(b, tq, d)
        x = x + F.dropout(self.output(read), p, self.training)
        ffn = self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))
        return x + F.dropout(ffn, p, self.training)


class SequentialRecommender(Recommender):
    """The two-tower tables plus shopcast's sequence encoder (`model/src/recommender/
    sequential.rs`): a slot's content is its product's hybrid vector (or the start vector), its
    event kind and its gap bucket; the query stream starts from the basket position, and each
    completion query from its basket's position. Memories hold the slots' streams only."""

    def __init__(self, n_customers, n_products, tokens, d, length, blocks, heads, dropout,
                 gap_buckets):
        super().__init__(n_customers, n_products, tokens, tokens, d, "two_tower")
        self.dropout = dropout
        table = lambda rows: nn.init.normal_(nn.Embedding(rows, d).weight, 0.0, 0.05)
        self.start, self.position = table(1), table(length + 2)
        self.kind, self.gap = table(2), table(gap_buckets)
        self.blocks = nn.ModuleList(SequenceBlock(d, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(d, eps=1e-5)

    def encode(self, products, is_product, is_start, position, kind, gap, query_position,
               may_read, pf):
        b, t = products.shape
        vectors = self.vectors(self.product_id, self.product_attribute, products.view(-1), *pf)
        content = (vectors.view(b, t, -1) * is_product + self.start * is_start
                   + self.kind[kind] + self.gap[gap])
        content = F.dropout(content, self.dropout, self.training)
        position = self.position[position]
        x = torch.cat([F.dropout(position, self.dropout, self.training),
                       F.dropout(self.position[query_position], self.dropout, self.training)], 1)
        for block in self.blocks:
            x = block(x, content + position + x[:, :t], may_read)
        return self.norm(x)

    def logits(self, inputs, customers, target_slots, target_rows, targets, negatives, cf, pf):
        read = self.encode(*inputs, pf)
        b, t, d = read.shape  # t: the slots and the completion queries
        tokens, weights = cf
        attributes = (self.customer_attribute(tokens[customers])
                      * weights[customers].unsqueeze(2)).sum(1)
        u = read.reshape(b * t, d)[target_slots] + attributes[target_rows]
        p = self.vectors(self.product_id, self.product_attribute, targets, *pf)
        pos = (u * p).sum(1) + self.product_bias(targets).squeeze(1)
        n = self.vectors(self.product_id, self.product_attribute, negatives, *pf)
        neg = u @ n.T + self.product_bias(negatives).squeeze(1)
        neg = neg.masked_fill(targets.unsqueeze(1) == negatives.unsqueeze(0), -1.0e9)
        return pos, neg


def sequence_batch(n_c, n_p, salt, device):
    """The same windows as the Rust side's `sequence_windows`: row r's event j is product
    ((r * 50 + j) * 7919 + salt * 104729) % n_p, a purchase in basket j // 2 + 1, baskets
    r % 5 + 1 days apart; a start slot before each row; then one completion query per event
    (each has a basket mate), at its basket, hiding its slot."""
    w, n = SEQ["windows"], SEQ["length"]
    t = n + 1
    r = torch.arange(w).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    products = torch.zeros(w, t, dtype=torch.int64)
    products[:, 1:] = ((r * n + j) * 7919 + salt * 104_729) % n_p
    basket = torch.zeros(w, t, dtype=torch.int64)
    basket[:, 1:] = j // 2 + 1
    days = (r % 5 + 1).float()
    gap = torch.zeros(w, t, dtype=torch.int64)
    bucket = 1 + torch.clamp(torch.floor(torch.log2(1 + days)).long(), max=SEQ["gap_buckets"] - 2)
    gap[:, 1:] = bucket * (j >= 2)  # the window's first basket has no gap
    is_start = torch.zeros(w, t, 1)
    is_start[:, 0] = 1.0
    is_product = 1.0 - is_start
    position = torch.clamp(basket, max=n)
    kind = torch.zeros(w, t, dtype=torch.int64)
    # Slot i reads slot j iff j's basket is strictly earlier; the start slot reads itself.
    may_read = basket.unsqueeze(1) < basket.unsqueeze(2)
    may_read[:, 0, 0] = True
    # Completion query k (event k's) reads slots of baskets up to its own but slot k + 1.
    query_basket = basket[:, 1:]
    query_reads = basket.unsqueeze(1) <= query_basket.unsqueeze(2)
    query_reads[:, torch.arange(n), torch.arange(n) + 1] = False
    may_read = torch.cat([may_read, query_reads], 1)
    query_position = torch.clamp(query_basket, max=n)
    inputs = tuple(x.to(device) for x in (products, is_product, is_start, position, kind, gap,
                                          query_position, may_read.unsqueeze(1)))
    width = t + n
    target_slots = torch.cat([(r * width + j + 1).reshape(-1), (r * width + t + j).reshape(-1)])
    target_rows = r.expand(w, n).reshape(-1).repeat(2)
    targets = products[:, 1:].reshape(-1).repeat(2)
    return (inputs, ids(w, n_c, salt, device), target_slots.to(device), target_rows.to(device),
            targets.to(device), ids(SEQ["negatives"], n_p, salt + 2, device))


def sequential_step(device, args, sync):
    n_c, n_p, tokens = 20_000, 5_000, 200
    torch.manual_seed(1)
    model = SequentialRecommender(n_c, n_p, tokens, SEQ["d"], SEQ["length"], SEQ["blocks"],
                                  SEQ["heads"], SEQ["dropout"], SEQ["gap_buckets"]).to(device)
    model.train()
    cf = entity_features(n_c, tokens, 4, device)
    pf = entity_features(n_p, tokens, 4, device)
    optim = adam(model.parameters(), 1e-3)
    batches = [sequence_batch(n_c, n_p, s, device) for s in range(8)]
    state = {"step": 0}

    def step():
        batch = batches[state["step"] % len(batches)]
        state["step"] += 1
        pos, neg = model.logits(*batch, cf, pf)
        loss = -F.log_softmax(torch.cat([pos.unsqueeze(1), neg], 1), 1)[:, 0].mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return median_seconds(step, 3, args.repeats, sync)


# ----------------------------------------------------------------------------- forecaster

FC = dict(batch=256, context=56, horizon=28, enc_f=20, dec_f=19, cards=(3, 60), key_dim=8,
          hidden=64, quantiles=(0.1, 0.5, 0.9))


class DemandForecaster(nn.Module):
    def __init__(self, enc_f, dec_f, cards, key_dim, hidden, n_quantiles, median_index):
        super().__init__()
        self.key_embeddings = nn.ModuleList(nn.Embedding(n, key_dim) for n in cards)
        for e in self.key_embeddings:
            nn.init.normal_(e.weight, 0.0, 0.1)
        static = len(cards) * key_dim
        self.encoder = nn.LSTM(enc_f + static, hidden, batch_first=True)
        self.decoder = nn.LSTM(dec_f + static, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_quantiles)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.median_index = median_index

    def forward_raw(self, encoder, decoder, keys, baseline):
        b, context, _ = encoder.shape
        horizon = decoder.shape[1]
        s = torch.cat([emb(keys[:, j]) for j, emb in enumerate(self.key_embeddings)], 1)
        s3 = s.unsqueeze(1)
        enc_in = torch.cat([encoder, s3.expand(b, context, s.shape[1])], 2)
        dec_in = torch.cat([decoder, s3.expand(b, horizon, s.shape[1])], 2)
        _, state = self.encoder(enc_in)
        dec_out, _ = self.decoder(dec_in, state)
        raw = self.head(dec_out)
        m = self.median_index
        median = baseline + raw[:, :, m]
        levels = [median] * raw.shape[2]
        below = median
        for j in range(m - 1, -1, -1):
            below = below - F.softplus(raw[:, :, j])
            levels[j] = below
        above = median
        for j in range(m + 1, raw.shape[2]):
            above = above + F.softplus(raw[:, :, j])
            levels[j] = above
        return torch.stack(levels, 2)

    def forward(self, *inputs):
        return self.forward_raw(*inputs).clamp_min(0.0)


def pinball(forecast, target, mask, levels):
    err = target.unsqueeze(2) - forecast
    loss = torch.maximum(err * levels, err * (levels - 1.0))
    return (loss * mask.unsqueeze(2)).sum() / (mask.sum() * levels.numel()).clamp_min(1.0)


def forecaster_inputs(device):
    b, c, h, ef, df = FC["batch"], FC["context"], FC["horizon"], FC["enc_f"], FC["dec_f"]
    # Same deterministic patterns as the Rust side.
    encoder = ((torch.arange(b * c * ef) % 13).float() / 13.0).view(b, c, ef)
    decoder = ((torch.arange(b * h * df) % 7).float() / 7.0).view(b, h, df)
    i = torch.arange(b * 2)
    keys = torch.where(i % 2 == 0, i % 3, i % 60).view(b, 2)
    baseline = torch.ones(b, h)
    return [t.to(device) for t in (encoder, decoder, keys, baseline)]


def forecaster_model(device):
    torch.manual_seed(1)
    q = FC["quantiles"]
    return DemandForecaster(FC["enc_f"], FC["dec_f"], FC["cards"], FC["key_dim"], FC["hidden"],
                            len(q), q.index(0.5)).to(device)


def forecaster_training_step(device, args, sync):
    model = forecaster_model(device)
    optim = adam(model.parameters(), 1e-3)
    inputs = forecaster_inputs(device)
    b, h = FC["batch"], FC["horizon"]
    target = torch.ones(b, h, device=device)
    mask = torch.ones(b, h, device=device)
    levels = torch.tensor(FC["quantiles"], device=device).view(1, 1, -1)

    def step():
        loss = pinball(model.forward_raw(*inputs), target, mask, levels)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return median_seconds(step, 3, args.repeats, sync)


def forecaster_inference_step(device, args, sync):
    model = forecaster_model(device).eval()
    inputs = forecaster_inputs(device)

    def step():
        with torch.inference_mode():
            model(*inputs).cpu()

    return median_seconds(step, 3, args.repeats, sync)


# ----------------------------------------------------------------------------- batch scoring

# 256 customers per chunk: the fastest for PyTorch of 64, 128, 256, 512, 1024 and 4096 here.
SCORING = dict(customers=20_000, products=20_000, dim=64, top_k=10, bought=20, chunk=256)


def batch_scoring(device, args, sync):
    n_c, n_p, d = SCORING["customers"], SCORING["products"], SCORING["dim"]
    k, bought, chunk = SCORING["top_k"], SCORING["bought"], SCORING["chunk"]
    torch.manual_seed(3)
    model = Recommender(n_c, n_p, 1, 1, d, "two_tower").to(device).eval()
    # No attribute tokens (all padding), as on the Rust side.
    cf = (torch.zeros(n_c, 1, dtype=torch.int64, device=device), torch.zeros(n_c, 1, device=device))
    pf = (torch.zeros(n_p, 1, dtype=torch.int64, device=device), torch.zeros(n_p, 1, device=device))
    rows = torch.arange(n_c, dtype=torch.int64)
    excluded = ((rows.unsqueeze(1) * 7919 + torch.arange(bought) * 104_729) % n_p).to(device)

    def run():
        with torch.inference_mode():
            all_products = torch.arange(n_p, device=device)
            products = model.vectors(model.product_id, model.product_attribute, all_products, *pf)
            bias = model.product_bias.weight.squeeze(1)
            for start in range(0, n_c, chunk):
                ids_ = torch.arange(start, min(start + chunk, n_c), device=device)
                u = model.vectors(model.customer_id, model.customer_attribute, ids_, *cf)
                scores = torch.addmm(bias, u, products.t())
                scores.scatter_(1, excluded[start:start + len(ids_)], float("-inf"))
                top = torch.topk(scores, k, dim=1)
                top.values.cpu(), top.indices.cpu()

    seconds = median_seconds(run, 1, max(3, args.repeats // 10), sync)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or wgpu (maps to cuda here)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated operation names")
    args = parser.parse_args()
    if args.device in ("cpu", "flex", "ndarray"):
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device for the PyTorch side of --device wgpu", file=sys.stderr)
        sys.exit(2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ops = {
        "recommender_training_step": lambda: recommender_step(device, "two_tower", 4, args, sync),
        "recommender_training_step_neumf": lambda: recommender_step(device, "neumf", 4, args,
                                                                    sync),
        "sequential_training_step": lambda: sequential_step(device, args, sync),
        "forecaster_training_step": lambda: forecaster_training_step(device, args, sync),
        "forecaster_inference_step": lambda: forecaster_inference_step(device, args, sync),
        "batch_scoring": lambda: batch_scoring(device, args, sync),
    }
    only = [o for o in args.only.split(",") if o]
    results = {name: op() for name, op in ops.items() if not only or name in only}
    print(json.dumps({
        "side": "pytorch",
        "version": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "ops": results,
    }))


if __name__ == "__main__":
    main()
