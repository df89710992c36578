"""A causeway checkpoint as an lm-evaluation-harness model (`pip install 'causeway[eval]'`).

    causeway eval harness --model causeway --model_args checkpoint=RUN_DIR --tasks ...
    lm_eval.simple_evaluate(model=CausewayLM(checkpoint=...), tasks=[...])

Importing this module registers the model as "causeway" in lm_eval's registry (lm_eval
finds models only among its own modules, so its own `lm_eval` command does not know it:
`causeway eval harness` is that command with the model registered). Contexts are read as
each architecture reads inputs (`inference/scoring.py`): the prefix of a prefix decoder,
the encoder input of an encoder-decoder. A context too long for the model loses its
oldest tokens, as lm_eval's Hugging Face model does.
"""

from __future__ import annotations

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from causeway.inference.generation import Generation, generate
from causeway.inference.loading import load_inference_model
from causeway.inference.sampling import Sampling
from causeway.inference.scoring import Request, score


@register_model("causeway")
class CausewayLM(LM):
    def __init__(
        self, checkpoint: str, batch_size: int | str | None = 8, device: str | None = "auto",
        max_gen_toks: int | str = 256, **harness_settings,
    ) -> None:  # fmt: skip
        """`batch_size` and `device` also come from lm_eval's --batch_size and --device
        (None there: ours); its other settings (max_batch_size) are not used."""
        super().__init__()
        self.loaded = load_inference_model(checkpoint, device or "auto")
        self.batch_size = int(batch_size) if str(batch_size or "auto").isdigit() else 8
        self.max_gen_toks = int(max_gen_toks)
        self.max_length = self.loaded.cfg.model.max_seq_len

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.checkpoint)

    def fitted(self, context: list[int], continuation: list[int]) -> Request:
        """The request, the context's oldest tokens dropped until it fits."""
        continuation = continuation[-self.max_length :]
        if self.loaded.arch == "encoder_decoder":
            return Request(context[-self.max_length :], continuation)
        room = max(self.max_length - len(continuation) + 1, 1)
        return Request(context[-room:], continuation)

    def scores(self, requests: list[Request]):
        tok = self.loaded.tokenizer
        return score(self.loaded.model, requests, tok.pad_id, tok.eos_id, self.batch_size)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        encode = self.loaded.tokenizer.encode
        asked = [self.fitted(encode(r.args[0]), encode(r.args[1])) for r in requests]
        return [(s.logprob, s.greedy) for s in self.scores(asked)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        tok = self.loaded.tokenizer
        windows, owner = [], []
        for i, r in enumerate(requests):
            pairs = get_rolling_token_windows(tok.encode(r.args[0]), tok.eos_id,
                                              self.max_length, context_len=1)  # fmt: skip
            for context, continuation in map(make_disjoint_window, pairs):
                windows.append(Request(context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, s in zip(owner, self.scores(windows), strict=True):
            totals[i] += s.logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        tok, out = self.loaded.tokenizer, []
        for r in requests:  # one at a time: each request has its own stop strings and length
            context, kwargs = r.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            how = Generation(n, Sampling(temperature=temperature), tok.eos_id)
            prompt = tok.encode(context)
            if self.loaded.arch == "decoder":
                prompt = prompt[-max(self.max_length - n, 1) :]
            else:
                prompt = prompt[-self.max_length :]
            text = tok.decode(generate(self.loaded.model, [prompt], how, tok.pad_id)[0],
                              skip_special_tokens=True)  # fmt: skip
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out
