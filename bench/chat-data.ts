/**
 * Deterministic (seeded) chat-format JSONL for the dataset doctor's benchmarks, shaped like a real
 * fine-tuning file: six system prompts reused across examples, user and assistant turns built from
 * English and Chinese sentences of varied length, a third of the examples multi-turn.
 *
 *   tsx bench/chat-data.ts OUT.jsonl SIZE_MB [SEED]
 *
 * What repeats: the system prompts (one of six per example, as real files repeat theirs), the
 * vocabulary (about 250 English words, 260 Chinese words) and the sentence patterns. What does not:
 * user and assistant texts are drawn word by word, so no two messages are the same string and the
 * token counter's cache only ever hits on system prompts.
 */
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

/** mulberry32: a small, fast PRNG; the same seed gives the same file. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SYSTEM_PROMPTS = [
  'You are a helpful customer support assistant for an online electronics store. Answer politely, keep replies short, and ask for the order number when you need it.',
  '你是一个耐心的中文写作助手。请用简洁、自然的中文回答用户的问题，必要时给出修改建议和例句。',
  'You are a bilingual travel guide. Reply in the language the user writes in; when they mix English and Chinese, you may mix too. Recommend places, transport and food, and mention opening hours when you know them.',
  '你是一名资深的软件工程师，擅长 TypeScript、Python 和数据库设计。回答时先给出结论，再解释原因，代码要完整可运行。',
  'You are Marv, a factual chatbot that is also sarcastic.',
  'You are a careful medical information assistant. You do not diagnose; you explain terms, suggest questions to ask a doctor, and always recommend seeing a professional for symptoms that persist. 如果用户用中文提问，请用中文回答。',
];

const EN_WORDS = (
  'the a an this that our your their every some many few most several other same new old good great small large long short early late ' +
  'order package delivery refund account password phone laptop charger screen battery cable store price discount invoice warranty ' +
  'customer support team manager engineer developer database query server client request response error message file folder ' +
  'city station train ticket hotel museum river mountain street restaurant market breakfast dinner coffee tea noodles dumplings ' +
  'weather morning evening weekend holiday summer winter spring autumn week month year day hour minute ' +
  'doctor symptom fever cough headache medicine appointment clinic test result question answer reason example problem solution ' +
  'function variable type interface module package build test release version change commit branch review comment ' +
  'is are was were will can could should would may might must has have had does did ' +
  'check send open close start finish update install configure restart return replace explain describe recommend compare choose ' +
  'visit book cancel confirm arrive leave wait pay ship track find keep make take give use need want know think ' +
  'quickly carefully usually often always never sometimes probably really only also still already again soon later ' +
  'because although when while before after until if unless so and but or with without for from into about between during ' +
  'clear simple useful important possible available expensive cheap crowded quiet busy ready correct wrong safe fresh warm cold ' +
  'two three five ten twenty hundred first second third last next'
).split(' ');

const ZH_WORDS = (
  '我们 你们 他们 这个 那个 今天 明天 昨天 现在 以后 之前 已经 还是 可以 应该 需要 希望 觉得 知道 认为 ' +
  '订单 快递 退款 账户 密码 手机 电脑 充电器 屏幕 电池 价格 折扣 发票 保修 客服 经理 工程师 数据库 服务器 请求 ' +
  '错误 文件 城市 车站 火车 机票 酒店 博物馆 长江 山顶 街道 餐厅 市场 早餐 晚饭 咖啡 茶叶 面条 饺子 天气 ' +
  '早上 晚上 周末 假期 夏天 冬天 春天 秋天 星期 月份 医生 症状 发烧 咳嗽 头疼 药物 预约 诊所 检查 结果 ' +
  '问题 答案 原因 例子 方法 函数 变量 类型 接口 模块 版本 修改 提交 分支 代码 测试 发布 配置 安装 重启 ' +
  '检查 发送 打开 关闭 开始 完成 更新 解释 描述 推荐 比较 选择 参观 预订 取消 确认 到达 离开 等待 支付 ' +
  '跟踪 寻找 使用 准备 注意 考虑 建议 帮助 学习 工作 生活 旅行 散步 休息 吃饭 喝水 睡觉 运动 购物 拍照 ' +
  '非常 比较 特别 一定 可能 马上 慢慢 经常 总是 从来 有时 真的 只是 也是 仍然 再次 很快 稍后 一起 分别 ' +
  '因为 所以 虽然 但是 如果 除非 而且 或者 然后 并且 关于 对于 通过 按照 根据 为了 由于 除了 以及 还有 ' +
  '清楚 简单 有用 重要 方便 昂贵 便宜 拥挤 安静 忙碌 正确 安全 新鲜 温暖 寒冷 舒服 漂亮 干净 热闹 有趣 ' +
  '北京 上海 武汉 成都 杭州 西安 广州 深圳 南京 重庆 一个 两个 三天 五分钟 十点 半小时 第一 第二 最后 下次 ' +
  '的 了 在 是 有 和 就 都 要 会 也 很 到 说 去 来 看 想 用 给'
).split(' ');

const pick = <T>(rand: () => number, list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;

function englishSentence(rand: () => number): string {
  const words: string[] = [];
  const n = 5 + Math.floor(rand() * 18);
  for (let i = 0; i < n; i++) words.push(pick(rand, EN_WORDS));
  if (rand() < 0.15) words.splice(1 + Math.floor(rand() * (n - 1)), 0, String(Math.floor(rand() * 2000)));
  const text = words.join(' ');
  return `${text[0]!.toUpperCase()}${text.slice(1)}${pick(rand, ['.', '.', '.', '?', '!'])}`;
}

function chineseSentence(rand: () => number): string {
  const words: string[] = [];
  const n = 6 + Math.floor(rand() * 20);
  for (let i = 0; i < n; i++) {
    words.push(pick(rand, ZH_WORDS));
    if (i > 2 && i < n - 2 && rand() < 0.1) words.push('，');
  }
  return `${words.join('')}${pick(rand, ['。', '。', '。', '？', '！'])}`;
}

/** A message's text: English, Chinese, or both mixed sentence by sentence, sometimes in paragraphs or a list. */
function text(rand: () => number, sentences: number): string {
  const style = rand();
  const sentence = style < 0.4 ? englishSentence : style < 0.75 ? chineseSentence : () => (rand() < 0.5 ? englishSentence(rand) : chineseSentence(rand));
  const parts: string[] = [];
  const list = sentences >= 4 && rand() < 0.2;
  for (let i = 0; i < sentences; i++) {
    const s = sentence(rand);
    if (list) parts.push(`${i === 0 ? '' : '\n'}${i + 1}. ${s}`);
    else parts.push(i > 0 && rand() < 0.15 ? `\n\n${s}` : i > 0 && !/[。？！]$/.test(parts[i - 1]!) ? ` ${s}` : s);
  }
  return parts.join('');
}

/** Sentences in a turn: users write 1-4, assistants 1-10, and one assistant turn in 20 is long (15-60). */
const userLength = (rand: () => number) => 1 + Math.floor(rand() * 4);
const assistantLength = (rand: () => number) => (rand() < 0.05 ? 15 + Math.floor(rand() * 46) : 1 + Math.floor(rand() * 10));

export function chatExample(rand: () => number): object {
  const messages: Array<Record<string, unknown>> = [];
  if (rand() < 0.97) messages.push({ role: 'system', content: pick(rand, SYSTEM_PROMPTS) });
  const r = rand();
  const turns = r < 0.67 ? 1 : r < 0.87 ? 2 : r < 0.95 ? 3 : 4 + Math.floor(rand() * 3);
  for (let t = 0; t < turns; t++) {
    messages.push({ role: 'user', content: text(rand, userLength(rand)) });
    const assistant: Record<string, unknown> = { role: 'assistant', content: text(rand, assistantLength(rand)) };
    // In multi-turn examples, some earlier answers are context only, as the guide's weight allows.
    if (t < turns - 1 && rand() < 0.2) assistant.weight = 0;
    messages.push(assistant);
  }
  return { messages };
}

/** Writes examples until the file holds at least `bytes`; returns the bytes and lines written. */
export function writeChatJsonl(file: string, bytes: number, seed = 1): { bytes: number; lines: number } {
  const rand = random(seed);
  const fd = fs.openSync(file, 'w');
  let written = 0;
  let lines = 0;
  try {
    while (written < bytes) {
      const parts: string[] = [];
      for (let i = 0; i < 256; i++, lines++) parts.push(`${JSON.stringify(chatExample(rand))}\n`);
      written += fs.writeSync(fd, parts.join(''));
    }
  } finally {
    fs.closeSync(fd);
  }
  return { bytes: written, lines };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [out, sizeMb, seed] = process.argv.slice(2);
  if (!out || !sizeMb) throw new Error('usage: tsx bench/chat-data.ts OUT.jsonl SIZE_MB [SEED]');
  console.log(writeChatJsonl(out, Number(sizeMb) * 1024 * 1024, seed ? Number(seed) : 1));
}
