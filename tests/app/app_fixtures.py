"""Data for the app's tests: two small documents (one Chinese, one English) whose facts are found nowhere
else, the questions that find them and the scripted model's replies that cite them."""

from __future__ import annotations

import json
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app" / "main.py"

ZH_NAME = "图书馆借阅规则.md"
ZH_TEXT = "# 借阅规则\n\n市图书馆的普通读者每次最多可以借阅十二本书，借期为三十天，可以续借一次。\n"
ZH_QUESTION = "图书馆的普通读者每次最多可以借阅几本书？"
ZH_REPLY = "普通读者每次最多可以借阅十二本书[1]。"

EN_NAME = "harbor-ferry.md"
EN_TEXT = ("# Ferry timetable\n\nThe harbor ferry to Lantern Island leaves every forty minutes from pier seven, "
           "starting at six in the morning.\n")
EN_QUESTION = "How often does the harbor ferry to Lantern Island leave?"
EN_REPLY = "The ferry to Lantern Island leaves every forty minutes from pier seven [1]."

OFF_TOPIC = "How do I bake sourdough bread at home?"


def write_docs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    zh, en = folder / ZH_NAME, folder / EN_NAME
    zh.write_text(ZH_TEXT, encoding="utf-8")
    en.write_text(EN_TEXT, encoding="utf-8")
    return zh, en


def app_env(home: Path, replies: Path) -> dict[str, str]:
    """KB_* variables for the app: private home and config file, scripted model with canned replies."""
    return {"KB_HOME": str(home), "KB_CONFIG": str(home / "config.yaml"), "KB_LLM__BACKEND": "scripted",
            "KB_LLM__MODEL": str(replies), "KB_ANSWER__TRANSLATE_QUERY": "off"}  # replies answer, not translate


def write_replies(path: Path, replies: list[str]) -> Path:
    """A replies file for a scripted model that writes Chinese and English (like ChatGLM2), so that the app
    shows its replies to questions in both languages rather than quotes (answer.mode auto)."""
    path.write_text(json.dumps({"replies": replies, "languages": ["en", "zh"]}, ensure_ascii=False),
                    encoding="utf-8")
    return path
