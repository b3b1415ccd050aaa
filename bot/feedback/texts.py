"""User-facing Chinese texts of ratings, /stats and the report."""
from __future__ import annotations

BUTTON_UP = "👍 有用"
BUTTON_DOWN = "👎 没用"
#: The last line of the first answer in a chat on platforms without buttons.
TYPED_HINT = "（觉得这个回答有用吗？10 分钟内直接回复“有用”或“没用”即可评价。）"

RATED_UP = "已记录：有用。谢谢您的评价！"
RATED_DOWN = "已记录：没用。谢谢，管理员会据此补充和改进文件。"
CHANGED_UP = "已改为：有用。"
CHANGED_DOWN = "已改为：没用。"
SAME_UP = "您已评价过：有用。"
SAME_DOWN = "您已评价过：没用。"
FOREIGN = "只有提问的人可以评价这条回答。"
GONE = "这条回答已超过保存期限，无法再评价。"
INVALID = "这个评价按钮无效，没有记录任何评价。"
NOTHING_TO_RATE = "没有找到您最近 10 分钟内收到的回答，无法评价。请在收到回答后 10 分钟内回复“有用”或“没用”。"
REFUSAL_NOT_RATED = "上一个问题在文件中没有找到相关规定，无需评价；这个问题已记录，供管理员补充文件时参考。"

NOT_ADMIN = "抱歉，只有管理员可以查看提问统计。"
STATS_USAGE = "用法：/stats [天数]，天数是 1 到 3650 之间的整数，不写则为 30。例如：/stats 7 查看最近 7 天的统计。"

LOG_OFF = "问题记录已关闭（DANGJIAN_QUESTION_LOG_DAYS=0），没有可以统计的数据。"
REPORT_HEADER = "最近 {days} 天的提问统计（{since} 至 {until}）"
REPORT_RETENTION = "（提问记录只保留 {retention} 天，更早的记录已删除）"
REPORT_EMPTY = "最近 {days} 天没有人提问。"
REPORT_TOTALS = "提问 {questions} 次：已回答 {answered} 次（{answered_share}），文件中未找到依据 {refused} 次（{refused_share}）"
REPORT_RATINGS = "评价：有用 {up} 次，没用 {down} 次"
REPORT_PLATFORMS = "各平台："
REPORT_UNANSWERED = "文件未能回答、被问得最多的问题："
REPORT_RATED_DOWN = "被评为“没用”的回答（问题 → 引用的条文）："
REPORT_DOCUMENTS = "被引用最多的文件："
REPORT_NONE = "  （无）"
NO_CITATION = "（无引用）"
PLATFORM_NAMES = {"telegram": "Telegram", "wecom": "企业微信", "dingtalk": "钉钉", "console": "控制台"}

CSV_ANSWERED = "已回答"
CSV_REFUSED = "未找到依据"
RATING_UP = "有用"
RATING_DOWN = "没用"
