"""Follow-up questions in context: the conversation memory the core consults (see
:mod:`bot.core.conversation` for the rule)."""
from bot.conversation.memory import ConversationMemory

__all__ = ["ConversationMemory"]
