"""The residents' words outside the web pages: mails, feed reasons, the consent text.

The web page ``/me`` has its words in ``web.i18n``; what the API and the mails say is here, in
the same three languages, so a digest reaches each resident in the language they chose.
"""

from __future__ import annotations

#: bumped whenever CONSENT changes in substance; stored with each account
CONSENT_VERSION = "2026-12-01"

CONSENT: dict[str, str] = {
    "zh-Hans": (
        "我们仅保存您的电子邮箱以及您自己选择关注的事项、领域、设施和区域，用于向您推送新的公开信息与"
        "办事进度。不保存密码、姓名或电话。您可随时在“我的主页”导出全部数据或注销账户（注销后关注、"
        "推送记录一并删除，您的评价匿名保留）。个性推荐默认关闭，仅在您开启后依据浏览记录生成。"
        "长期未使用的账户将自动删除。依据《中华人民共和国个人信息保护法》。"
    ),
    "zh-Hant": (
        "我們僅保存您的電子郵箱以及您自己選擇關注的事項、領域、設施和區域，用於向您推送新的公開資訊與"
        "辦事進度。不保存密碼、姓名或電話。您可隨時在「我的主頁」匯出全部資料或註銷帳戶（註銷後關注、"
        "推送記錄一併刪除，您的評價匿名保留）。個人化推薦預設關閉，僅在您開啟後依據瀏覽記錄生成。"
        "長期未使用的帳戶將自動刪除。依據《中華人民共和國個人信息保護法》。"
    ),
    "en": (
        "We keep only your e-mail address and the matters, domains, facilities and areas you choose "
        "to follow, to send you new disclosures and the progress of your cases. No password, name "
        "or phone number is kept. On your page you can export everything at any time or delete "
        "your account (your subscriptions and feed go with it; your ratings stay, anonymous). "
        "Recommendations are off unless you turn them on; only then is browsing history used. "
        "Accounts unused for a long time are deleted. Under China's Personal Information "
        "Protection Law (PIPL)."
    ),
}

WORDS: dict[str, dict[str, str]] = {
    "zh-Hans": {
        "code_subject": "您的登录验证码：{code}",
        "code_body": "您的验证码是 {code}，{minutes} 分钟内有效。如非本人操作，请忽略本邮件。",
        "digest_subject": "您关注的内容有 {n} 条更新",
        "digest_intro": "自上次通知以来，您关注的内容有以下更新：",
        "digest_more": "另有 {n} 条，请在您的主页查看：{url}",
        "digest_footer": "不想再收到这些邮件？退订：{url}",
        "reason_matter": "您关注了 {label}",
        "reason_domain": "您关注了领域 {label}",
        "reason_facility": "您关注了 {label}",
        "reason_area": "您关注了 {label}",
        "reason_case": "您的办事进度",
        "area_label": "{point}周边 {radius} 米内的{layer}",
        "document_new": "新公开文件", "document_changed": "文件更新", "document_linked": "新公开文件",
        "facility_new": "新设施", "facility_closed": "设施暂停开放",
        "facility_reopened": "设施恢复开放", "facility_removed": "设施已撤销", "case": "办事进度",
    },
    "zh-Hant": {
        "code_subject": "您的登入驗證碼：{code}",
        "code_body": "您的驗證碼是 {code}，{minutes} 分鐘內有效。如非本人操作，請忽略本郵件。",
        "digest_subject": "您關注的內容有 {n} 則更新",
        "digest_intro": "自上次通知以來，您關注的內容有以下更新：",
        "digest_more": "另有 {n} 則，請在您的主頁查看：{url}",
        "digest_footer": "不想再收到這些郵件？退訂：{url}",
        "reason_matter": "您關注了 {label}",
        "reason_domain": "您關注了領域 {label}",
        "reason_facility": "您關注了 {label}",
        "reason_area": "您關注了 {label}",
        "reason_case": "您的辦事進度",
        "area_label": "{point}周邊 {radius} 米內的{layer}",
        "document_new": "新公開文件", "document_changed": "文件更新", "document_linked": "新公開文件",
        "facility_new": "新設施", "facility_closed": "設施暫停開放",
        "facility_reopened": "設施恢復開放", "facility_removed": "設施已撤銷", "case": "辦事進度",
    },
    "en": {
        "code_subject": "Your sign-in code: {code}",
        "code_body": "Your code is {code}; it is valid for {minutes} minutes. "
        "If you did not ask for it, ignore this mail.",
        "digest_subject": "{n} updates on what you follow",
        "digest_intro": "Since the last mail, this is new on what you follow:",
        "digest_more": "{n} more on your page: {url}",
        "digest_footer": "No more of these mails? Unsubscribe: {url}",
        "reason_matter": "you follow {label}",
        "reason_domain": "you follow the domain {label}",
        "reason_facility": "you follow {label}",
        "reason_area": "you follow {label}",
        "reason_case": "your own case",
        "area_label": "{layer} within {radius} m of {point}",
        "document_new": "New document", "document_changed": "Document updated",
        "document_linked": "New document", "facility_new": "New facility",
        "facility_closed": "Facility closed", "facility_reopened": "Facility reopened",
        "facility_removed": "Facility removed", "case": "Case progress",
    },
}  # fmt: skip


def text(lang: str, key: str, **values: object) -> str:
    """The words for `key` in `lang` (a resident's language), filled in."""
    return WORDS.get(lang, WORDS["zh-Hans"])[key].format(**values)
