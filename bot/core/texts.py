"""User-facing Chinese texts of the core and of every adapter (features keep their own next to
their code). Adapters show no text of their own: what they cannot render is described here, keyed
on their declared :class:`~bot.core.models.Capabilities`."""
from __future__ import annotations

START = (
    "您好！我是党建助手。\n"
    "您可以直接用中文提问党内工作程序方面的问题，例如“党组会议一般多久召开一次？”，"
    "我会引用相关文件的具体条款作答，并注明出处；文件中没有规定的，我会如实说明。\n"
    "支部书记还可以登记会议并接收会前提醒，或按清单一步步准备民主生活会、组织生活会。"
)
HELP_HEADER = "可用命令（群聊中请 @我 或直接使用命令）："
BASE_HELP: list[tuple[str, str]] = [
    ("/start", "开始使用，查看简介"),
    ("/help", "查看全部命令和示例"),
    ("直接提问，例如：党组会议要多少人到会才能召开？", "按文件条款回答并注明出处"),
    ("/ask 党组会议纪要由谁签发？", "提问（群聊中也可用）"),
    ("追问，例如：那表决呢？", "接着上一个问题问，回答开头注明理解的内容"),
    ("/new 或 重新开始", "清除上一个问题，之后的问题单独回答"),
]
UNKNOWN_COMMAND = "没有 /{word} 这个命令。"
INTERNAL_ERROR = "抱歉，处理您的消息时出现了问题，请稍后再试。"
RATE_LIMITED = "您发送得太快了，请稍等一分钟再提问。"
EMPTY_QUESTION = "请用文字描述您的问题，例如：党组会议一般多久召开一次？"
FILE_NOT_EXPECTED = "我只能回答文字提问。如需更新文件库，请管理员在私聊中发送文件。"
FOLLOW_UP = "（接上一问：{understood}）"
CONTEXT_CLEARED = "好的，已开始新的对话，接下来的问题将单独回答。"
RESTART_WORDS = frozenset({"重新开始", "新对话", "开始新对话", "清除上下文"})
STALE_BUTTON = "这个按钮已失效，请重新发送命令。"
SERVICE_UNAVAILABLE = "服务暂时不可用，请稍后再试。您的操作没有保存，请稍后重新发送。"

# What an adapter could not read (IncomingMessage.problem).
NOT_TEXT = "目前只支持文字消息，请直接用文字输入您的问题，例如：党组会议一般多久召开一次？"
FILE_TOO_BIG = "文件太大了（上限 5 MB），无法处理。"
FILE_UNREADABLE = "文件下载失败，请稍后再试。"

# What a platform cannot show (Capabilities.buttons / .files).
BUTTONS_AS_TYPED = "请直接回复以下选项之一：{labels}"
FILE_NOT_SENT = "（附件 {filename} 无法在这里发送）"

# The console chat.
CONSOLE_GREETING = "党建助手（控制台）已启动。直接输入问题即可提问；输入 /help 查看全部命令，输入 exit 退出。"
CONSOLE_BUTTON_HINT = "（输入编号或按钮文字即可选择）"
CONSOLE_FILE_SAVED = "已保存文件：{path}"
CONSOLE_GOODBYE = "再见！"
