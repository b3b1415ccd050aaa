"""All configuration, read once from the environment (prefix ``DANGJIAN_``) and `.env`."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``2h``, ``1d`` into a timedelta; raise ValueError otherwise."""
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in _DURATION_UNITS or not text[:-1].isdigit():
        raise ValueError(f"bad duration {text!r}: use a whole number with s/m/h/d, e.g. 2h")
    return timedelta(seconds=int(text[:-1]) * _DURATION_UNITS[text[-1]])


class Settings(BaseSettings):
    """Every knob of the bot. Construct once at start-up and pass it down."""

    model_config = SettingsConfigDict(env_prefix="DANGJIAN_", env_file=".env", extra="ignore")

    # Storage
    data_dir: Path = Path("./data")
    corpus_dir: Path = Path("./corpus")
    prompts_dir: Path = Path("./prompts")  # LLM prompts, checklists, meeting rules
    database_url: str | None = Field(default=None, repr=False)  # default: sqlite in data_dir
    chroma_url: str | None = None  # default: embedded PersistentClient in data_dir

    # Retrieval and answers
    max_question_chars: int = 500
    top_k: int = 5

    # LLM (optional)
    llm_base_url: str | None = None
    llm_api_key: str | None = Field(default=None, repr=False)
    llm_model: str | None = None
    llm_timeout: float = 20.0

    # Chat
    admin_ids: str = ""  # "telegram:9001,wecom:zhangsan"
    rate_limit_per_minute: int = 20
    timezone: str = "Asia/Shanghai"
    reminder_offsets: str = "1d,2h"
    reminder_grace: str = "6h"
    reminder_poll_seconds: float = 5.0
    context_ttl: str = "30m"  # how long a follow-up may lean on the previous question
    question_log_days: int = Field(default=180, ge=0)  # 0: no question log, no ratings

    # Telegram
    telegram_token: str | None = Field(default=None, repr=False)
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: str | None = Field(default=None, repr=False)
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = 8443

    # HTTP server for callback platforms
    http_host: str = "0.0.0.0"
    http_port: int = 8080

    # WeCom
    wecom_corp_id: str | None = None
    wecom_agent_id: str | None = None
    wecom_secret: str | None = Field(default=None, repr=False)
    wecom_token: str | None = Field(default=None, repr=False)
    wecom_aes_key: str | None = Field(default=None, repr=False)
    wecom_api_base: str = "https://qyapi.weixin.qq.com"

    # DingTalk
    dingtalk_app_key: str | None = None
    dingtalk_app_secret: str | None = Field(default=None, repr=False)
    dingtalk_robot_code: str | None = None
    dingtalk_api_base: str = "https://api.dingtalk.com"
    dingtalk_mode: str = Field(default="http", pattern="^(http|stream)$")

    @field_validator("context_ttl", "reminder_grace")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("reminder_offsets")
    @classmethod
    def _check_offsets(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                parse_duration(part)
        return value

    # Derived values -------------------------------------------------------
    @property
    def offsets(self) -> list[timedelta]:
        return sorted(
            (parse_duration(p) for p in self.reminder_offsets.split(",") if p.strip()),
            reverse=True,
        )

    @property
    def context_window(self) -> timedelta:
        return parse_duration(self.context_ttl)

    @property
    def grace(self) -> timedelta:
        return parse_duration(self.reminder_grace)

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.admin_ids.split(",") if p.strip())

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dangjian.db').resolve()}"

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    def retrieval_config(self):
        """The retrieval package's own configuration, built from these settings."""
        from pydantic import SecretStr

        from retrieval.config import LLMConfig, RetrievalConfig

        llm = (LLMConfig(base_url=self.llm_base_url, model=self.llm_model, timeout=self.llm_timeout,
                         api_key=SecretStr(self.llm_api_key or ""))
               if self.llm_enabled else None)
        return RetrievalConfig(
            index_dir=self.index_dir, corpus_dir=self.corpus_dir, chroma_url=self.chroma_url,
            prompts_dir=self.prompts_dir, top_k=self.top_k, max_question_chars=self.max_question_chars, llm=llm,
        )
