//! WXBizMsgCrypt safe-mode message crypto.
