"""What aggregators do to a story when they repost it, and look-alike different stories: the
builders behind the near-duplicate tests (tests/neardupcases.py, on the project's own reference
article) and the labelled benchmark set (bench/neardup_set.py, on a corpus kept outside the
repository). Bodies are HTML as the normaliser hands them on. Everything takes its randomness
from the `random.Random` it is given, so a seed gives the same text on every run and machine.

The weather and employment bulletins are templates written for this project, with the shape
and kind of figures of real forecasts and statistics releases; the ads, footers and notes are
the kind aggregators add.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass

__all__ = [
    "BOILERPLATE",
    "VARIATIONS",
    "TemplatePair",
    "boilerplate_under",
    "combination",
    "employment_bulletin",
    "employment_paragraphs",
    "images_for",
    "original",
    "paragraphs",
    "quoted_inside",
    "render",
    "repost",
    "repost_kind",
    "template_pairs",
    "weather_bulletin",
    "weather_paragraphs",
    "with_boilerplate",
]


# --- rendering ------------------------------------------------------------------------------
def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n") if p.strip()]


def render(paras: list[str], images: list[str], wrapper: int = 0) -> str:
    """Body HTML: one <p> per paragraph, an image after the first and the middle paragraph."""
    out = []
    spots = {0, len(paras) // 2} if len(paras) > 2 else {0}
    pictures = iter(images)
    for number, para in enumerate(paras):
        out.append(f"<p>{html.escape(para, quote=False)}</p>")
        if number in spots:
            src = next(pictures, None)
            if src:
                out.append(f'<p><img src="{src}" referrerpolicy="no-referrer"></p>')
    body = "".join(out)
    if wrapper == 1:
        return f'<div class="article-content"><section data-role="body">{body}</section></div>'
    if wrapper == 2:
        body = body.replace("<p>", '<p style="text-indent:2em"><span>').replace(
            "</p>", "</span></p>"
        )
        return f'<article><div class="rich_media_content">{body}</div></article>'
    return body


def images_for(article_id: str, host: str) -> list[str]:
    return [f"https://{host}/{article_id}/{n}.jpg" for n in range(2)]


def original(article: dict, host: str) -> str:
    """The story as its first publisher serves it: its paragraphs, two images on `host`."""
    return render(paragraphs(article["text"]), images_for(article["id"], host))


# --- what aggregators do to a story ---------------------------------------------------------
ADS = [
    "【广告】下载趣头条APP，看新闻领现金红包，新用户最高可得88元！",
    "点击下方“阅读原文”，关注我们获取更多精彩内容。",
    "↓↓↓ 长按二维码关注公众号，每天推送最新资讯 ↓↓↓",
    "打开ZAKER，看更多精彩新闻",
]
FOOTERS = [
    "来源：辽宁日报",
    "（来源：人民网-财经频道 责任编辑：王晓）",
    "版权声明：本文来源于网络，版权归原作者所有，如有侵权请联系我们删除。",
    "本文系转载，不代表本站观点。原文链接：http://news.example.cn/2019/0612/a1234.html",
    "（编辑：李明　校对：张华）",
]
NOTES = [
    "编者按：以下内容转自合作媒体，略有删节。",
    "【导读】本文较长，建议收藏后阅读。",
    "编者按：这是一篇值得一读的报道，我们在此转载，供读者参考。",
]
FULL_TO_HALF = {
    "，": ",",
    "。": ".",
    "：": ":",
    "；": ";",
    "！": "!",
    "？": "?",
    "（": "(",
    "）": ")",
}


def _to_halfwidth_punct(text: str, rng: random.Random) -> str:
    chars = []
    for ch in text:
        if ch in FULL_TO_HALF and rng.random() < 0.7:
            chars.append(FULL_TO_HALF[ch] + (" " if rng.random() < 0.5 else ""))
        elif ch in "“”":
            chars.append('"')
        else:
            chars.append(ch)
    return "".join(chars)


def _width_swap(text: str) -> str:
    """ASCII letters and digits to full width and full-width ones to ASCII (NFKC folds both)."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0x21 <= code <= 0x7E and ch.isalnum():
            out.append(chr(code + 0xFEE0))
        elif 0xFF01 <= code <= 0xFF5E and chr(code - 0xFEE0).isalnum():
            out.append(chr(code - 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


def _whitespace(text: str, rng: random.Random) -> str:
    out = []
    for ch in text:
        out.append(ch)
        if ch in "，。" and rng.random() < 0.3:
            out.append(rng.choice(["\u3000", "  ", "\n", "&nbsp;"]))
    return "".join(out)


SWAPS = {
    "的": "地",
    "地": "的",
    "得": "的",
    "在": "再",
    "已": "以",
    "年": "年度",
    "日": "号",
    "和": "与",
}


def _edits(text: str, rng: random.Random) -> str:
    """Copy-editing: about one character in 150 swapped (的/地/得, 在/再, 和/与, 日/号) or
    dropped, as an editor's light touch or a re-typed copy does."""
    out = []
    for ch in text:
        if rng.random() < 1 / 150:
            out.append(SWAPS.get(ch, ""))
        else:
            out.append(ch)
    return "".join(out)


VARIATIONS = ("ad", "footer", "note", "punct", "width", "trim", "images", "wrapper", "edits")


def combination(rng: random.Random) -> tuple[str, ...]:
    """Two or three variations at once, in VARIATIONS' spelling, sorted."""
    return tuple(sorted(rng.sample(VARIATIONS, rng.randint(2, 3))))


def repost_kind(variations: tuple[str, ...]) -> str:
    """How a repost pair is labelled: `repost:ad+footer`."""
    return "repost:" + "+".join(variations)


def repost(article: dict, variations: tuple[str, ...], rng: random.Random) -> str:
    paras = paragraphs(article["text"])
    images = images_for(article["id"], "img.origin-paper.cn")
    wrapper = 0
    if "trim" in variations:
        # the repost stops early: the last ~10-15 % of the text, cut at a sentence end
        text = "\n".join(paras)
        cut = int(len(text) * rng.uniform(0.85, 0.9))
        stop = text.rfind("。", 0, cut)
        paras = paragraphs(text[: stop + 1 if stop > len(text) // 2 else cut])
    if "edits" in variations:
        paras = [_edits(p, rng) for p in paras]
    if "punct" in variations:
        paras = [_whitespace(_to_halfwidth_punct(p, rng), rng) for p in paras]
    if "width" in variations:
        paras = [_width_swap(p) for p in paras]
    if "note" in variations:
        paras = [rng.choice(NOTES), *paras]
    if "ad" in variations:
        ad = rng.choice(ADS)
        paras = [ad, *paras] if rng.random() < 0.5 else [*paras, ad]
    if "footer" in variations:
        paras = [*paras, rng.choice(FOOTERS)]
    if "images" in variations:
        images = [
            f"https://cors.zfour.workers.dev/?https://p{n}.qutoutiao.net/{rng.randrange(10**8)}.webp"
            for n in range(2)
        ]
    if "wrapper" in variations:
        wrapper = rng.choice([1, 2])
    body = render(paras, images, wrapper)
    return body.replace("&amp;nbsp;", "&nbsp;")


# --- look-alike different stories ------------------------------------------------------------
CITIES = [
    "沈阳",
    "大连",
    "鞍山",
    "抚顺",
    "本溪",
    "丹东",
    "锦州",
    "营口",
    "阜新",
    "辽阳",
    "盘锦",
    "铁岭",
]
SKIES = ["晴", "多云", "阴", "小雨", "阵雨", "晴转多云", "多云转阴", "小雪"]
WINDS = ["北", "南", "西南", "东北", "西北", "东南"]


def weather_bulletin(rng: random.Random, day: int) -> str:
    return render(weather_paragraphs(rng, day), [])


def weather_paragraphs(rng: random.Random, day: int) -> list[str]:
    paras = [
        f"辽宁省气象台{day}日16时发布天气预报：今天夜间到明天白天，全省以{rng.choice(SKIES)}为主，"
        f"{rng.choice(WINDS)}风{rng.randint(2, 4)}到{rng.randint(4, 6)}级。"
    ]
    for city in CITIES:
        low = rng.randint(-15, 18)
        paras.append(
            f"{city}：{rng.choice(SKIES)}，{rng.choice(WINDS)}风{rng.randint(2, 5)}级，"
            f"最低气温{low}℃，最高气温{low + rng.randint(4, 12)}℃，"
            f"相对湿度{rng.randint(30, 95)}%。"
        )
    paras.append(
        f"气象专家提醒：未来三天全省气温{rng.choice(['逐步回升', '略有下降', '变化不大'])}，"
        "早晚温差较大，请广大市民注意适时增减衣物，出行注意交通安全。"
    )
    return paras


def employment_bulletin(rng: random.Random, month: int) -> str:
    return render(employment_paragraphs(rng, month), [])


def employment_paragraphs(rng: random.Random, month: int) -> list[str]:
    def pct() -> str:
        return f"{rng.uniform(3.5, 6.5):.1f}%"

    def mil() -> str:
        return f"{rng.uniform(80, 1300):.0f}万人"

    change = rng.choice(["上升", "下降", "持平"])
    paras = [
        f"国家统计局今日发布数据显示，{month}月份，全国城镇调查失业率为{pct()}，"
        f"比上月{change}{rng.uniform(0.1, 0.3):.1f}个百分点。",
        f"本地户籍劳动力调查失业率为{pct()}；外来户籍劳动力调查失业率为{pct()}，"
        f"其中外来农业户籍劳动力调查失业率为{pct()}。31个大城市城镇调查失业率为{pct()}。",
        f"16—24岁劳动力调查失业率为{rng.uniform(10, 20):.1f}%，25—59岁劳动力调查失业率为"
        f"{pct()}。全国企业就业人员周平均工作时间为{rng.uniform(46, 49.5):.1f}小时。",
        f"1—{month}月份，全国城镇新增就业{mil()}，完成全年目标任务的"
        f"{rng.uniform(10, 95):.1f}%。{month}月末，外出务工农村劳动力总量"
        f"{rng.uniform(17000, 19500):.0f}万人，"
        f"同比增长{rng.uniform(0.5, 3.5):.1f}%。",
        "国家统计局新闻发言人表示，总的来看，就业形势总体稳定，但外部环境复杂严峻，"
        "稳就业仍面临一定压力，下一步要继续实施就业优先政策，加大对重点群体的就业帮扶力度。",
    ]
    return paras


@dataclass(frozen=True)
class TemplatePair:
    """Two bulletins written from one template with other figures: different stories."""

    kind: str  # "template:weather" or "template:employment"
    a_id: str
    b_id: str
    a: str  # body HTML
    b: str


def template_pairs(seed: int, count: int) -> list[TemplatePair]:
    """`count` weather pairs (days n and n + 1), then `count` employment pairs (months n and
    n + 1, December followed by January), each bulletin from its own seeded generator."""
    pairs = [
        TemplatePair(
            "template:weather",
            f"weather-{day}",
            f"weather-{day + 1}",
            weather_bulletin(random.Random(seed + day), day),
            weather_bulletin(random.Random(seed + day + 1), day + 1),
        )
        for day in range(1, count + 1)
    ]
    pairs += [
        TemplatePair(
            "template:employment",
            f"employment-{n}",
            f"employment-{n + 1}",
            employment_bulletin(random.Random(seed * 2 + n), (n - 1) % 12 + 1),
            employment_bulletin(random.Random(seed * 2 + n + 1), n % 12 + 1),
        )
        for n in range(1, count + 1)
    ]
    return pairs


BOILERPLATE = (
    "【免责声明】本站所载文章、数据仅供参考，使用前务请仔细阅读法律申明，风险自负。"
    "本站部分内容转载自其他媒体，转载目的在于传递更多信息，并不代表本站赞同其观点和对其真实性负责。"
    "如因作品内容、版权和其他问题需要同本站联系的，请在作品发表之日起三十日内进行；"
    "未经本站书面授权，任何单位及个人不得转载、摘编或以其它方式使用本站作品。"
    "欢迎关注我们的微信公众号和官方微博，获取第一手新闻资讯；投稿、爆料及商务合作请发送邮件至编辑部邮箱，"
    "我们将在三个工作日内予以回复。感谢您的阅读与支持！"
)


def with_boilerplate(article: dict) -> str:
    return render([*paragraphs(article["text"]), BOILERPLATE], [])


def boilerplate_under(paras: list[str]) -> str:
    """Paragraphs under the long shared footer, no images."""
    return with_boilerplate({"text": "\n".join(paras)})


def quoted_inside(short: dict, long: dict) -> str:
    paras = paragraphs(long["text"])
    middle = len(paras) // 2
    quote = [f"据此前报道：{p}" for p in paragraphs(short["text"])]
    return render([*paras[:middle], *quote, *paras[middle:]], images_for(long["id"], "img.b.cn"))
