// A compact English sentiment lexicon: word → polarity. Strong words count double. Ambiguous words
// (`like`, `well`, `free`, `pretty`, `issue`, `support`) are left out on purpose: in documents they are
// usually neutral.

const POSITIVE_STRONG = `amazing awesome brilliant delightful excellent exceptional fabulous fantastic flawless
incredible love magnificent marvelous outstanding perfect phenomenal remarkable spectacular splendid superb
terrific wonderful`;

const POSITIVE = `accomplish accomplished achieve achieved achievement achievements admirable admire advantage
advantages affordable agile appreciate appreciated appreciation approve approved attractive beautiful beautifully
beneficial benefit benefits best better boost boosted calm capable celebrate celebrated charming cheerful clean
clever comfortable commend compelling confident convenient cool creative delight delighted dependable easier easy
effective effectively efficient efficiently elegant empower encourage encouraged encouraging energetic engaging
enjoy enjoyable enjoyed enthusiasm enthusiastic excited exciting fair fast favorable favourable favorite favourite
fine fortunate friendly fun gain gains generous glad good gorgeous grateful great happily happy harmony healthy
helpful honest hope hopeful ideal impressive improve improved improvement improvements improving innovative
inspiring intuitive joy joyful kind loved lovely loves loving loyal lucky neat nice optimistic pleasant pleased
pleasure popular positive powerful praise praised precise productive proficient profit profitable profits progress
promising proud prosper prosperity recommend recommended reliable relief resilient respect respected responsive
reward rewarding robust safe satisfaction satisfied satisfying save savings secure seamless smart smooth solid
solve solved stable strength strengths strong stunning succeed success successful successfully superior supportive
sustainable thank thankful thanks thrilled thrive thriving tremendous trust trusted trustworthy useful valuable
vibrant victory warm welcome win winning wins worth worthy wow`;

const NEGATIVE_STRONG = `appalling atrocious awful catastrophe catastrophic disaster disastrous disgusting dreadful
hate horrible horrific nightmare pathetic terrible tragedy useless worst`;

const NEGATIVE = `abandon abandoned abuse abusive accident afraid aggressive alarm alarming anger angry annoy annoyed
annoying anxiety anxious bad bankrupt bankruptcy bias biased blame boring broke broken bug buggy burden chaos
chaotic cheat collapse collapsed complain complained complaint complaints concern concerned concerns confused
confusing corrupt corruption costly crash crashed crashes crisis criticism criticize criticized cruel damage
damaged danger dangerous dead death decline declined declining defect defective deficit delay delayed delays deny
depressed depressing destroy destroyed destruction difficult difficulty dirty disadvantage disappoint disappointed
disappointing disappointment dislike dismal dispute disrupt disruption dissatisfied distress doubt downturn
dropped dull error errors evil fail failed failing fails failure failures fake false fault faulty fear fearful
flaw flawed flaws fraud frustrated frustrating frustration harm harmful hated hazard hostile hurt ill illegal
inadequate inaccurate incompetent ineffective inefficient inferior insecure instability lacking lawsuit lose loser
loses losing loss losses mess messy mistake mistakes negative neglect neglected noisy obstacle offensive outage
outages overpriced pain painful panic poor poorly problem problematic problems recession regret reject rejected
risk risks risky rude sad scam scandal scary severe shame shortage sick slow sluggish stress stressful struggle
struggled struggling stupid suffer suffered suffering threat threaten threatened toxic tragic trouble troubled ugly
unable unacceptable unfair unfortunate unfortunately unhappy unreliable unsafe unstable upset violation violence
vulnerable warning waste wasted weak weakness worried worry worrying worse wrong`;

function entries(words: string, polarity: number): [string, number][] {
  return words.split(/\s+/).map((word) => [word, polarity]);
}

/** Word → polarity: ±1, ±2 for strong words. */
export const SENTIMENT_LEXICON: ReadonlyMap<string, number> = new Map([
  ...entries(POSITIVE_STRONG, 2),
  ...entries(POSITIVE, 1),
  ...entries(NEGATIVE_STRONG, -2),
  ...entries(NEGATIVE, -1),
]);

/** Words that flip the polarity of a sentiment word up to three tokens after them (plus any `…n't`). */
export const NEGATORS: ReadonlySet<string> = new Set(
  `not no never none nobody nothing neither nor nowhere without cannot hardly dont doesnt didnt isnt wasnt arent
werent cant couldnt wont wouldnt shouldnt hasnt havent hadnt aint`.split(/\s+/),
);

/** Word right before a sentiment word → multiplier. */
export const MODIFIERS: ReadonlyMap<string, number> = new Map([
  ...entries(
    `very really extremely incredibly highly so too absolutely truly totally completely remarkably exceptionally
particularly especially super deeply hugely immensely seriously utterly most`,
    1.5,
  ),
  ...entries('slightly somewhat marginally fairly mildly partly barely little', 0.5),
]);
