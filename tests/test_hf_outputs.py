"""Every model folder the command line can write loads in HF's AutoTokenizer with our ids, and in a
fill-mask pipeline that returns real tokens: mlm with either tokenizer and with ALBERT's switches
(through train.main), and XPT from
a BERT, a RoBERTa and an ELECTRA source with either tokenizer (build_xpt + the saves run_xpt ends with)."""
from pathlib import Path

import pytest
import torch

import bert
import tokenizer as T
import train
import xpt

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["오늘은 날씨가 정말 좋아서 공원에 갔어요.", "The cat sat on the mat, and then it slept."]


@pytest.fixture(scope="module")
def toks():
    docs = train.read_documents(ROOT / "data" / "ko_train.txt")[:200] + \
        train.read_documents(ROOT / "data" / "en_train.txt")[:60]
    return {"bpe": T.BPETokenizer.train(docs, 500),
            "wordpiece": T.WordPieceTokenizer.train(docs, 1600, lowercase=False)}


def our_ids(tok, text):
    """What our model saw in training for `text` with " MASK" marking a masked word: the word's ids
    replaced by one mask id (its space belongs to the masked word), between [CLS]/<s> and [SEP]/</s>."""
    ids = []
    for i, part in enumerate(text.split(" MASK")):
        ids += ([tok.mask_id] if i else []) + tok.encode(part)
    return [tok.cls_id] + ids + [tok.sep_id]


def check_folder(model_dir, tok, fill_dir=None):
    hf = transformers.AutoTokenizer.from_pretrained(model_dir)
    mask = hf.mask_token
    assert mask == tok.id_to_token(tok.mask_id)
    for text in TEXTS + [t.replace(" 정말", " MASK").replace(" mat", " MASK") for t in TEXTS]:
        assert hf(text.replace("MASK", mask))["input_ids"] == our_ids(tok, text), text
    fill = transformers.pipeline("fill-mask", model=str(fill_dir or model_dir), tokenizer=hf, top_k=3)
    out = fill(TEXTS[0].replace(" 정말", " " + mask))
    assert len(out) == 3 and all(r["token_str"] and "공원에" in r["sequence"] for r in out), out


@pytest.mark.parametrize("kind,albert", [("bpe", False), ("wordpiece", False), ("bpe", True)])
def test_mlm_output_loads_in_hf_tools(kind, albert, toks, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(train.read_documents(ROOT / "data" / "ko_train.txt")[:80]) + "\n")
    toks[kind].save(tmp_path / "tok")
    train.main(["--task=mlm", f"--corpus={corpus}", f"--tokenizer_dir={tmp_path / 'tok'}", "--steps=2",
                "--hidden_size=32", "--num_layers=1", "--num_heads=2", "--intermediate_size=64", "--max_len=64",
                "--batch_size=4", "--eval_every=0", f"--out_dir={tmp_path / 'out'}", "--device=cpu",
                *(["--embedding_size=16", "--share_layers"] if albert else [])])
    check_folder(tmp_path / "out" / "model", toks[kind])
    config = transformers.AutoConfig.from_pretrained(tmp_path / "out" / "model")
    assert config.model_type == ("albert" if albert else "roberta" if kind == "bpe" else "bert")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
@pytest.mark.parametrize("source_type", ["bert", "roberta", "electra"])
def test_xpt_output_loads_in_hf_tools(source_type, kind, toks, tmp_path):
    tok = toks[kind]
    cfg = bert.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=66, pad_token_id=1,
                          type_vocab_size=1 if source_type == "roberta" else 2, model_type=source_type)
    torch.manual_seed(0)
    source = (bert.ElectraForPreTraining if source_type == "electra" else bert.BertForMaskedLM)(cfg)
    model = xpt.build_xpt(source, len(tok), method="xpt", target_pad_token_id=tok.pad_id, seed=0)
    out = tmp_path / "model"
    train.save_model(model, tok, out)  # what train.run_xpt writes at its end
    # ELECTRA: the discriminator is the model ELECTRA keeps; the generator next to it fills masks
    check_folder(out, tok, out / "generator" if source_type == "electra" else None)
