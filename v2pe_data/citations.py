"""What a build's dataset card asks its users to cite: V2PE always, the benchmark whose data or format the
build holds (MileBench for `milebench` builds, MM-NIAH when the `mmniah` layout was written), and each source
dataset the samples were drawn from. Keys are BibTeX keys; `cite_keys` gives them in the order below."""

from __future__ import annotations

BIBTEX = {
    "ge2025v2pe": """@inproceedings{ge2025v2pe,
  title = {{V2PE}: Improving Multimodal Long-Context Capability of Vision-Language Models with Variable Visual
           Position Encoding},
  author = {Ge, Junqi and Chen, Ziyi and Lin, Jintao and Zhu, Jinguo and Liu, Xihui and Dai, Jifeng and Zhu, Xizhou},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year = {2025},
  eprint = {2412.09616},
  archivePrefix = {arXiv}
}""",
    "wang2024mmniah": """@inproceedings{wang2024mmniah,
  title = {Needle In A Multimodal Haystack},
  author = {Wang, Weiyun and Zhang, Shuibo and Ren, Yiming and Duan, Yuchen and Li, Tiantong and Liu, Shuo and
            Hu, Mengkang and Chen, Zhe and Zhang, Kaipeng and Lu, Lewei and Zhu, Xizhou and Luo, Ping and
            Qiao, Yu and Dai, Jifeng and Shao, Wenqi and Wang, Wenhai},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS), Datasets and Benchmarks Track},
  year = {2024},
  eprint = {2406.07230},
  archivePrefix = {arXiv}
}""",
    "song2024milebench": """@inproceedings{song2024milebench,
  title = {{MileBench}: Benchmarking {MLLMs} in Long Context},
  author = {Song, Dingjie and Chen, Shunian and Chen, Guiming Hardy and Yu, Fei and Wan, Xiang and Wang, Benyou},
  booktitle = {Conference on Language Modeling (COLM)},
  year = {2024},
  eprint = {2404.18532},
  archivePrefix = {arXiv}
}""",
    "mathew2021docvqa": """@inproceedings{mathew2021docvqa,
  title = {{DocVQA}: A Dataset for {VQA} on Document Images},
  author = {Mathew, Minesh and Karatzas, Dimosthenis and Jawahar, C. V.},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year = {2021},
  eprint = {2007.00398},
  archivePrefix = {arXiv}
}""",
    "mathew2022infographicvqa": """@inproceedings{mathew2022infographicvqa,
  title = {{InfographicVQA}},
  author = {Mathew, Minesh and Bagal, Viraj and Tito, Rub{\\`e}n and Karatzas, Dimosthenis and Valveny, Ernest and
            Jawahar, C. V.},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year = {2022},
  eprint = {2104.12756},
  archivePrefix = {arXiv}
}""",
    "masry2022chartqa": """@inproceedings{masry2022chartqa,
  title = {{ChartQA}: A Benchmark for Question Answering about Charts with Visual and Logical Reasoning},
  author = {Masry, Ahmed and Long, Do Xuan and Tan, Jia Qing and Joty, Shafiq and Hoque, Enamul},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2022},
  year = {2022},
  eprint = {2203.10244},
  archivePrefix = {arXiv}
}""",
}
SOURCE_KEYS = {"docvqa": "mathew2021docvqa", "infovqa": "mathew2022infographicvqa", "chartqa": "masry2022chartqa"}


def cite_keys(manifest: dict) -> list[str]:
    """The BibTeX keys a build's card cites, in `BIBTEX` order."""
    keys = {"ge2025v2pe"}
    if manifest["task"] == "milebench":
        keys.add("song2024milebench")
    if "mmniah" in manifest.get("formats", ()):
        keys.add("wang2024mmniah")
    keys |= {SOURCE_KEYS[s["kind"]] for s in manifest["sources"]
             if s.get("kind") in SOURCE_KEYS and s.get("status", "available") == "available"}
    return [k for k in BIBTEX if k in keys]


def citation_block(keys: list[str]) -> list[str]:
    """The card's `## Citation` section for `keys` (unknown keys are left out)."""
    entries = [BIBTEX[k] for k in BIBTEX if k in keys]
    return ["## Citation", "", "If you use this data, please cite:", "", "```bibtex", "\n\n".join(entries), "```", ""]
