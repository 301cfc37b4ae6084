"""The staff view (``GET /staff``): alerts first, then ratings worst-first and a small map.

The page itself holds no data: it asks for the staff token, keeps it in the tab's
sessionStorage (gone when the tab closes) and calls the staff API with it. Everything the API
returns is put on the page as text (DOM ``textContent``), never as HTML, so a comment holding
``<script>`` shows as those characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

import layers
from geoservice.api.deps import LangDep, SettingsDep
from geoservice.toilets.ratings import TOILET_TAGS
from geoservice.toilets.staff import ALERT_KINDS
from web.routes import content_security_policy

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parent / "templates"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

#: the page's words in each language (alert kinds and tags included)
TEXT: dict[str, dict[str, str]] = {
    "zh-Hans": {
        "title": "环卫工作台", "token": "工作人员令牌", "sign_in": "登录", "sign_out": "退出",
        "bad_token": "令牌无效或已撤销", "alerts": "告警", "no_alerts": "暂无告警",
        "ratings": "评价（最差在前）", "map": "地图", "map_missing": "地图组件未安装",
        "since": "起始", "facility": "设施", "layer": "类别", "score": "评分",
        "subscores": "清洁/气味/用品", "tags": "标签", "comment": "留言", "time": "时间",
        "cleaned": "已清洁", "sort_worst": "最差在前", "sort_recent": "最新在前",
        "all_layers": "全部类别", "error": "加载失败，请稍后重试", "refresh": "刷新",
        "low_rating": "评分偏低", "sensor_offline": "传感器离线", "nh3_high": "氨气超标",
        "busy": "使用频繁待清洁",
        "no_paper": "无纸", "no_soap": "无洗手液", "no_water": "无水", "wet_floor": "地面湿滑",
        "broken_lock": "门锁损坏", "blocked": "堵塞", "smelly": "有异味", "dirty": "脏",
        "out_of_order": "故障", "clean": "干净", "well_stocked": "用品齐全",
        "accessible_ok": "无障碍良好",
    },
    "zh-Hant": {
        "title": "環衛工作台", "token": "工作人員令牌", "sign_in": "登入", "sign_out": "登出",
        "bad_token": "令牌無效或已撤銷", "alerts": "警示", "no_alerts": "暫無警示",
        "ratings": "評價（最差在前）", "map": "地圖", "map_missing": "地圖元件未安裝",
        "since": "起始", "facility": "設施", "layer": "類別", "score": "評分",
        "subscores": "清潔/氣味/用品", "tags": "標籤", "comment": "留言", "time": "時間",
        "cleaned": "已清潔", "sort_worst": "最差在前", "sort_recent": "最新在前",
        "all_layers": "全部類別", "error": "載入失敗，請稍後重試", "refresh": "重新整理",
        "low_rating": "評分偏低", "sensor_offline": "感測器離線", "nh3_high": "氨氣超標",
        "busy": "使用頻繁待清潔",
        "no_paper": "無紙", "no_soap": "無洗手液", "no_water": "無水", "wet_floor": "地面濕滑",
        "broken_lock": "門鎖損壞", "blocked": "堵塞", "smelly": "有異味", "dirty": "髒",
        "out_of_order": "故障", "clean": "乾淨", "well_stocked": "用品齊全",
        "accessible_ok": "無障礙良好",
    },
    "en": {
        "title": "Sanitation staff", "token": "Staff token", "sign_in": "Sign in",
        "sign_out": "Sign out", "bad_token": "The token is invalid or revoked",
        "alerts": "Alerts", "no_alerts": "No open alerts",
        "ratings": "Ratings (worst first)", "map": "Map", "map_missing": "Map assets missing",
        "since": "Since", "facility": "Facility", "layer": "Layer", "score": "Score",
        "subscores": "Clean/Smell/Supplies", "tags": "Tags", "comment": "Comment",
        "time": "Time", "cleaned": "Cleaned", "sort_worst": "Worst first",
        "sort_recent": "Most recent first", "all_layers": "All layers",
        "error": "Could not load; try again shortly", "refresh": "Refresh",
        "low_rating": "Low rating", "sensor_offline": "Sensor offline",
        "nh3_high": "Ammonia high", "busy": "Heavy use since last clean",
        "no_paper": "No paper", "no_soap": "No soap", "no_water": "No water",
        "wet_floor": "Wet floor", "broken_lock": "Broken lock", "blocked": "Blocked",
        "smelly": "Smelly", "dirty": "Dirty", "out_of_order": "Out of order", "clean": "Clean",
        "well_stocked": "Well stocked", "accessible_ok": "Accessible",
    },
}  # fmt: skip

assert all(set(ALERT_KINDS) | set(TOILET_TAGS) <= set(words) for words in TEXT.values())


@router.get("/staff", response_class=HTMLResponse)
async def staff_page(settings: SettingsDep, lang: LangDep) -> HTMLResponse:
    """The staff view: a token form, then alerts, ratings worst-first and a map."""
    config: dict[str, Any] = {
        "text": TEXT[lang],
        "lang": lang,
        "centre": list(settings.district.centre),
        "tiles": settings.service.tile_url,
        "attribution": settings.service.tile_attribution,
        "layers": {key: layer.names[lang] for key, layer in layers.all_layers().items()},
    }
    body = _env.get_template("staff.html").render(
        t=TEXT[lang], lang=lang, district=settings.district, config=config
    )
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": content_security_policy(settings),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Vary": "Accept-Language",
        },
    )
