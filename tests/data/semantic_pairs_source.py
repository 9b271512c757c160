"""The source of gateway/cache/data/semantic_pairs.jsonl: hand-written prompt families, expanded into pairs.

Each family has two to four hand-written wordings of one request (paraphrases, which should share an answer)
with a slot `{x}`, and slot values that change the answer (near misses, which must never share one). A family
gives paraphrase pairs (two wordings, same value) and near-miss pairs (same or different wording, different
value). Families alternate between the `calib` and `heldout` splits, so the held-out figures come from wordings
the threshold was never fitted on. Pairs of two families' prompts are near misses of kind `unrelated`
(different requests that the guard may let through, so only the threshold keeps them apart). `HAND_PAIRS` adds
near misses that are not one slot (a swapped verb, a different question on the same topic). `ORDER_FAMILIES` have
two slots whose order carries the meaning ("{a} to {b}"): the same order in two wordings is a paraphrase (the
wordings move the slots around: "from {a} to {b}" / "to {b} from {a}"), the slots swapped a near miss of kind
`order`; `HAND_SAME` adds paraphrases that reorder words around "to", "from", "vs" or a comma. Regenerate with `python tests/data/semantic_pairs_source.py`;
tests/test_semantic_pairs.py checks that the committed file is this script's output.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "gateway" / "cache" / "data" / "semantic_pairs.jsonl"

# (kind of near miss, wordings, slot values)
FAMILIES: list[tuple[str, list[str], list[str]]] = [
    ("number", ["How far is {x} miles in kilometers?", "Convert {x} miles to km.", "What is {x} miles in km?"],
     ["5", "50", "500"]),
    ("number", ["What is {x} degrees Fahrenheit in Celsius?", "Convert {x} degrees Fahrenheit to Celsius.",
                "How much is {x} °F in Celsius?"], ["40", "104", "14"]),
    ("number", ["Write a Python function that returns the first {x} prime numbers.",
                "Write Python code that returns the first {x} primes.",
                "Give me a Python function returning the first {x} prime numbers."], ["10", "100", "1000"]),
    ("number", ["What is {x} percent of 250?", "Calculate {x}% of 250.", "How much is {x} percent of 250?"],
     ["15", "50", "5"]),
    ("number", ["Summarize the history of the Roman Empire in {x} sentences.",
                "Give me a summary of the history of the Roman Empire in {x} sentences.",
                "In {x} sentences, summarize the history of the Roman Empire."], ["3", "10", "30"]),
    ("number", ["Is {x} a prime number?", "Is the number {x} prime?", "Tell me whether {x} is prime."],
     ["91", "97", "9"]),
    ("number", ["Plan a {x}-day trip to Japan.", "Make a plan for a {x}-day trip to Japan.",
                "Create an itinerary for a {x}-day trip to Japan."], ["3", "7", "14"]),
    ("number", ["How many calories are in {x} grams of rice?", "How many calories does {x} grams of rice have?",
                "Calories in {x} grams of rice?"], ["100", "200", "1000"]),
    ("number", ["What was the population of London in {x}?", "How many people lived in London in {x}?",
                "Population of London in {x}?"], ["1900", "1950", "2000"]),
    ("number", ["Give me {x} ideas for a birthday party.", "List {x} ideas for a birthday party.",
                "Suggest {x} birthday party ideas."], ["5", "10", "20"]),
    ("number", ["How long does it take to boil an egg for {x} minutes to be hard?",
                "Is an egg boiled for {x} minutes hard boiled?",
                "Will boiling an egg for {x} minutes make it hard boiled?"], ["6", "10", "3"]),
    ("number", ["What is the square root of {x}?", "Calculate the square root of {x}.",
                "Compute the square root of {x}."], ["144", "1444", "14"]),
    ("negation", ["How do I make a cake {x} eggs?", "Give me a recipe for a cake {x} eggs.",
                  "What is a good cake recipe {x} eggs?"], ["without", "with"]),
    ("negation", ["Write a Python function to reverse a string that {x} uses slicing.",
                  "Write Python code that reverses a string and {x} uses slicing.",
                  "Give me a Python function reversing a string that {x} uses slicing."], ["does not", "only"]),
    ("negation", ["Why does my code {x} compile?", "What are the reasons my code {x} compile?",
                  "My code {x} compile, why?"], ["not", "still"]),
    ("negation", ["Should I {x} take ibuprofen with coffee?", "Is it advisable that I {x} take ibuprofen with coffee?",
                  "Would you advise me to {x} take ibuprofen with coffee?"], ["never", "always"]),
    ("negation", ["List foods that are {x} safe for dogs.", "Which foods are {x} safe for dogs?",
                  "What foods are {x} safe to give dogs?"], ["not", "generally"]),
    ("negation", ["Explain why the sky is {x} blue at night.", "Why is the sky {x} blue at night?",
                  "Can you explain why the sky is {x} blue at night?"], ["not", "still"]),
    ("negation", ["Write a SQL query that selects users who have {x} placed an order.",
                  "Give me a SQL query selecting users who have {x} placed an order.",
                  "SQL query: select the users who have {x} placed an order."], ["never", "already"]),
    ("polarity", ["How do I turn {x} dark mode in Windows 11?", "How can I turn {x} dark mode on Windows 11?",
                  "Steps to turn {x} dark mode in Windows 11."], ["on", "off"]),
    ("polarity", ["How do I {x} two-factor authentication on GitHub?",
                  "How can I {x} two-factor authentication for GitHub?",
                  "Steps to {x} two-factor authentication on GitHub."], ["enable", "disable"]),
    ("polarity", ["Write a function that sorts an array in {x} order in Java.",
                  "Write a Java function to sort an array in {x} order.",
                  "Give me a Java function that sorts an array in {x} order."], ["ascending", "descending"]),
    ("polarity", ["How do I {x} a column in a pandas DataFrame?", "How can I {x} a column in a pandas DataFrame?",
                  "What is the way to {x} a column of a pandas DataFrame?"], ["add", "remove"]),
    ("polarity", ["How can I {x} my credit score quickly?", "What can I do to {x} my credit score quickly?",
                  "How do I {x} my credit score fast?"], ["increase", "decrease"]),
    ("polarity", ["Write a Python script to {x} a JSON file.", "Write a Python program that can {x} a JSON file.",
                  "Give me a Python script to {x} a JSON file."], ["encode", "decode"]),
    ("polarity", ["What happens {x} a heart attack?", "Explain what happens {x} a heart attack.",
                  "Describe what happens {x} a heart attack."], ["before", "after"]),
    ("polarity", ["Is it a good idea to {x} Tesla stock right now?", "Should I {x} Tesla stock right now?",
                  "Would it be smart to {x} Tesla stock right now?"], ["buy", "sell"]),
    ("polarity", ["How do I {x} a package with pip?", "How can I {x} a package using pip?",
                  "What is the pip command to {x} a package?"], ["install", "uninstall"]),
    ("polarity", ["Convert this text to {x}: Hello World", "Change this text to {x}: Hello World",
                  "Make this text {x}: Hello World"], ["uppercase", "lowercase"]),
    ("polarity", ["What are the {x} of remote work?", "List the {x} of remote work.",
                  "Explain the {x} of remote work."], ["advantages", "disadvantages"]),
    ("polarity", ["How do I {x} a file in Linux?", "How can I {x} a file on Linux?",
                  "What is the command to {x} a file in Linux?"], ["compress", "decompress"]),
    ("entity", ["What is the capital of {x}?", "Tell me the capital city of {x}.", "Which city is the capital of {x}?"],
     ["Australia", "Austria", "Canada"]),
    ("entity", ["Who wrote the novel {x}?", "Who is the author of the novel {x}?", "Tell me who wrote the novel {x}."],
     ["Dracula", "Frankenstein", "Emma"]),
    ("entity", ["Summarize the plot of the movie {x}.", "Give me a plot summary of the movie {x}.",
                "What happens in the movie {x}? Summarize the plot."], ["Inception", "Interstellar", "Tenet"]),
    ("entity", ["How tall is {x}?", "What is the height of {x}?", "Tell me the height of {x}."],
     ["Everest", "Kilimanjaro", "Denali"]),
    ("entity", ["When did {x} become president?", "When did {x} take office as president?",
                "In what year did {x} become president?"], ["Obama", "Lincoln", "Macron"]),
    ("entity", ["Compare the iPhone 15 with the {x}.", "Compare the iPhone 15 to the {x}.",
                "Give me a comparison of the iPhone 15 and the {x}."], ["Pixel 8", "Galaxy S24", "Pixel 9"]),
    ("entity", ["What is the weather usually like in {x} in March?", "How is the weather in {x} in March?",
                "Describe the typical March weather in {x}."], ["Lisbon", "Oslo", "Cairo"]),
    ("entity", ["Explain how {x} works.", "Describe how {x} works.", "How does {x} work? Explain."],
     ["Kubernetes", "Kafka", "Terraform"]),
    ("entity", ["What is the stock ticker of {x}?", "Tell me the ticker symbol for {x}.",
                "Which ticker symbol does {x} trade under?"], ["Microsoft", "Apple", "Nvidia"]),
    ("language", ["Translate 'good morning' into {x}.", "How do you say 'good morning' in {x}?",
                  "What is 'good morning' in {x}?"], ["French", "German", "Italian"]),
    ("language", ["Translate this sentence to {x}: The meeting is at noon.",
                  "Please translate to {x}: The meeting is at noon.",
                  "Give me the {x} translation of: The meeting is at noon."], ["Spanish", "Portuguese", "Japanese"]),
    ("code", ["Write a function in {x} that checks whether a string is a palindrome.",
              "Write {x} code to check whether a string is a palindrome.",
              "Give me a {x} function that checks if a string is a palindrome."], ["Python", "Rust", "JavaScript"]),
    ("code", ["How do I read a file line by line in {x}?", "How can I read a file line by line in {x}?",
              "What is the way to read a file line by line in {x}?"], ["Python", "Java", "Ruby"]),
    ("code", ["Show me how to make an HTTP request in {x}.", "How do I make an HTTP request in {x}?",
              "Give an example of an HTTP request in {x}."], ["TypeScript", "Kotlin", "PHP"]),
    ("code", ["Write a binary search in {x}.", "Implement binary search in {x}.", "Write {x} code for binary search."],
     ["C++", "Haskell", "Swift"]),
    ("code", ["What does the {x} function do in Python?", "Explain the {x} function in Python.",
              "What is the purpose of the {x} function in Python?"], ["zip()", "map()", "enumerate()"]),
    ("code", ["Why does `{x}` raise an error in my code?", "My code fails on `{x}`, why?",
              "What is wrong with `{x}` in my code?"], ["df.loc[0]", "df.iloc[0]", "df.at[0]"]),
    ("code", ["How do I use {x} in React?", "How can I use {x} in a React component?",
              "Explain how to use {x} in React."], ["useState", "useEffect", "useMemo"]),
    ("form", ["Write a {x} about autumn.", "Compose a {x} about autumn.", "Create a {x} about autumn leaves."],
     ["haiku", "limerick", "sonnet"]),
    ("form", ["Write a short {x} about a cat who learns to fly.", "Compose a short {x} about a cat that learns to fly.",
              "Create a short {x} about a cat learning to fly."], ["story", "poem", "song"]),
    ("form", ["Write a {x} announcing our new product launch.", "Draft a {x} that announces our new product launch.",
              "Compose a {x} announcing the launch of our new product."], ["tweet", "email", "press release"]),
    ("form", ["Give me a {x} about programmers.", "Tell me a {x} about programmers.",
              "Share a {x} about programmers."], ["joke", "riddle", "quote"]),
    ("form", ["Present the planets of the solar system as a {x}.", "Show the planets of the solar system as a {x}.",
              "Give me the planets of the solar system in a {x}."], ["table", "list", "poem"]),
    ("unit", ["How many {x} are in a mile?", "How many {x} does a mile have?", "A mile is how many {x}?"],
     ["feet", "yards", "inches"]),
    ("unit", ["Convert 10 {x} to pounds.", "What is 10 {x} in pounds?", "How many pounds is 10 {x}?"],
     ["kilograms", "grams", "ounces"]),
    ("unit", ["How much is 100 {x} in Japanese yen?", "Convert 100 {x} to Japanese yen.",
              "What is 100 {x} worth in Japanese yen?"], ["dollars", "euros"]),
    ("wh", ["{x} was the Eiffel Tower built?", "{x} was the Eiffel Tower constructed?",
            "Tell me {x} the Eiffel Tower was built."], ["When", "Why", "Where"]),
    ("wh", ["{x} invented the telephone?", "Tell me {x} invented the telephone.",
            "Do you know {x} invented the telephone?"], ["Who", "When", "Why"]),
]

# plain requests with nothing for the guard to compare: only the threshold keeps two of them apart
PLAIN: list[str] = [
    "How do I cook rice?", "How do I learn guitar?", "How do I fix a flat bicycle tire?", "How do I write a resume?",
    "How do I grow tomatoes?", "How do I meditate?", "How do I tie a tie?", "How do I train for a marathon?",
    "How do I clean a cast iron pan?", "How do I improve my sleep?", "How do I start a podcast?",
    "How do I negotiate a salary?", "How do I remove a wine stain?", "How do I make sourdough bread?",
    "How do I study for exams?", "How do I paint a room?", "How do I change a car battery?",
    "How do I get rid of ants?", "How do I back up my phone?", "How do I learn to swim?",
    "What is photosynthesis?", "What is inflation?", "What is machine learning?", "What is a black hole?",
    "What is the stock market?", "What is climate change?", "What is a mortgage?", "What is quantum computing?",
    "What is democracy?", "What is a vaccine?", "What causes earthquakes?", "What causes rainbows?",
    "What causes headaches?", "What causes tides?", "Explain how a refrigerator works.",
    "Explain how the internet works.", "Explain how airplanes fly.", "Explain how batteries work.",
    "Explain how credit cards work.", "Explain how the heart pumps blood.",
]

# near misses that are not one slot: (a, b, kind)
HAND_PAIRS: list[tuple[str, str, str]] = [
    ("How do I sort a list in Python?", "How do I reverse a list in Python?", "swap"),
    ("How do I sort a list in Python?", "How do I shuffle a list in Python?", "swap"),
    ("How do I merge two dictionaries in Python?", "How do I compare two dictionaries in Python?", "swap"),
    ("How do I rename a branch in git?", "How do I delete a branch in git?", "swap"),
    ("How do I rename a branch in git?", "How do I merge a branch in git?", "swap"),
    ("What is the difference between a list and a tuple?", "What is the difference between a list and a set?", "swap"),
    ("Explain how vaccines work.", "Explain how antibiotics work.", "swap"),
    ("What are the symptoms of flu?", "What are the treatments for flu?", "swap"),
    ("What are the causes of inflation?", "What are the effects of inflation?", "swap"),
    ("How do I center a div horizontally?", "How do I center a div vertically?", "polarity"),
    ("Write a cover letter for a nurse position.", "Write a cover letter for a teacher position.", "swap"),
    ("Give me tips for running a marathon.", "Give me tips for running a podcast.", "swap"),
    ("How do I cook rice in a pot?", "How do I cook pasta in a pot?", "swap"),
    ("Write a poem about the sea.", "Write a poem about the desert.", "swap"),
    ("Summarize the causes of World War I.", "Summarize the causes of World War II.", "number"),
    ("What is the boiling point of water?", "What is the freezing point of water?", "swap"),
    ("How do I convert a string to an integer in Java?", "How do I convert an integer to a string in Java?", "order"),
    ("Is coffee good for you?", "Is coffee bad for you?", "swap"),
    ("Recommend a book about history.", "Recommend a book about economics.", "swap"),
    ("What is the time complexity of quicksort?", "What is the space complexity of quicksort?", "swap"),
    ("How do I create a virtual environment in Python?", "How do I activate a virtual environment in Python?",
     "swap"),
    ("Explain the theory of relativity simply.", "Explain the theory of evolution simply.", "swap"),
    ("What should I pack for a beach vacation?", "What should I pack for a ski vacation?", "swap"),
    ("How do I train a puppy to sit?", "How do I train a puppy to stay?", "swap"),
    ("What is the capital of France?", "Quelle est la capitale de la France ?", "language"),
    ("How are you today?", "¿Cómo estás hoy?", "language"),
    ("Write a haiku about the moon.", "Write a limerick about the moon.", "form"),
    ("Write a haiku about the ocean.", "Write a limerick about the ocean.", "form"),
    ("What does `git reset --hard` do?", "What does `git reset --soft` do?", "code"),
    ("What does x == y mean in Python?", "What does x != y mean in Python?", "code"),
    ("Turn on the lights in the kitchen.", "Turn off the lights in the kitchen.", "polarity"),
    ("Should I use tabs for indentation?", "Should I use spaces for indentation?", "swap"),
    # meaning carried by word order alone (the guard's order check)
    ("Did the Lakers beat the Celtics in the 2008 finals?", "Did the Celtics beat the Lakers in the 2008 finals?",
     "order"),
    ("Is a mile longer than a kilometer?", "Is a kilometer longer than a mile?", "order"),
    ("What is 2 to the power of 10?", "What is 10 to the power of 2?", "order"),
    ("Subtract 15 from 40.", "Subtract 40 from 15.", "order"),
    ("What is 12 divided by 4?", "What is 4 divided by 12?", "order"),
    ("Is 0.1 greater than 0.01?", "Is 0.01 greater than 0.1?", "order"),
    ("Redirect traffic from port 80 to port 443.", "Redirect traffic from port 443 to port 80.", "order"),
    ("How do I send money from PayPal to my bank account?", "How do I send money from my bank account to PayPal?",
     "order"),
    ("Is Mount Everest taller than K2?", "Is K2 taller than Mount Everest?", "order"),
    ("Convert a PDF to a Word document.", "Convert a Word document to a PDF.", "order"),
    ("Port this code from Python 2 to Python 3.", "Port this code from Python 3 to Python 2.", "order"),
    ("Should I prefer composition over inheritance?", "Should I prefer inheritance over composition?", "order"),
    ("Should I use tabs instead of spaces?", "Should I use spaces instead of tabs?", "order"),
    ("Was Napoleon defeated by Wellington?", "Was Wellington defeated by Napoleon?", "order"),
    ("Is a crocodile more dangerous than a shark?", "Is a shark more dangerous than a crocodile?", "order"),
    ("Convert celsius to fahrenheit and fahrenheit to celsius.", "Convert celsius to fahrenheit.", "order"),
    ("Did the Roman Empire come before the Greek city states?",
     "Did the Greek city states come before the Roman Empire?", "order"),
    ("Translate this paragraph from German into English.", "Translate this paragraph from English into German.",
     "order"),
    ("What is the time difference from New York to Tokyo?", "What is the time difference from Tokyo to New York?",
     "order"),
    ("How do I switch from Android to iPhone?", "How do I switch from iPhone to Android?", "order"),
    ("Convert this JSON to YAML.", "Convert this YAML to JSON.", "order"),
    ("Why is gold more expensive than silver?", "Why is silver more expensive than gold?", "order"),
    # words the stemmer once merged (`https` was `http`), `in` after "how many", "the us" as a country
    ("How do I redirect HTTP to HTTPS in nginx?", "How do I redirect HTTPS to HTTP in nginx?", "order"),
    ("How many feet are in a mile?", "How many miles are in a foot?", "order"),
    ("How many ounces in a pound?", "How many pounds in an ounce?", "order"),
    ("How many grams are in a kilogram?", "How many kilograms are in a gram?", "order"),
    ("What is the population of the us?", "What is the population of the uk?", "entity"),
    ("Should I switch my site from http to https?", "Should I switch my site from https to http?", "order"),
]

# two slots whose order is the request: (wordings with {a} and {b}, (a, b) values)
ORDER_FAMILIES: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["Convert {a} to {b}.", "How do I convert {a} into {b}?", "How do I convert from {a} to {b}?"],
     [("Celsius", "Fahrenheit"), ("kilometers", "miles")]),
    (["Translate 'good night' from {a} to {b}.", "Translate 'good night' into {b} from {a}.",
      "How do you translate 'good night' from {a} into {b}?"], [("English", "French"), ("Spanish", "German")]),
    (["Did {a} defeat {b} in the 2014 World Cup?", "Was {b} defeated by {a} in the 2014 World Cup?",
      "In the 2014 World Cup, did {a} defeat {b}?"], [("Germany", "Brazil"), ("Argentina", "Netherlands")]),
    (["Is {a} bigger than {b}?", "Is {a} really bigger than {b}?", "Would you say {a} is bigger than {b}?"],
     [("Texas", "France"), ("Jupiter", "Saturn")]),
    (["What is the exchange rate from {a} to {b}?", "Exchange rate from {a} to {b}?",
      "What's the exchange rate for {a} to {b}?"], [("USD", "EUR"), ("yen", "pounds")]),
    (["How do I copy files from {a} to {b} with rsync?", "Copy files from {a} to {b} using rsync.",
      "Using rsync, how do I copy files to {b} from {a}?"], [("Dropbox", "OneDrive"), ("S3", "GCS")]),
    (["How do I convert {a} to {b} in Java?", "How can I transform {a} into {b} in Java?",
      "In Java, how do I convert to {b} from {a}?"], [("strings", "integers"), ("dates", "timestamps")]),
    (["Write an email from a {a} to a {b} about a late report.",
      "Draft an email to a {b} from a {a} about a late report.",
      "Compose an email from a {a} to a {b} about a late report."], [("manager", "customer"), ("teacher", "parent")]),
    (["Why would I choose {a} over {b} for data science?", "Why should I choose {a} over {b} for data science?",
      "Why choose {a} over {b} for data science?"], [("Python", "Julia"), ("pandas", "Polars")]),
    (["How do I migrate a database from {a} to {b}?", "Steps to migrate a database from {a} to {b}.",
      "What is the way to migrate a database to {b} from {a}?"], [("MySQL", "PostgreSQL"), ("MongoDB", "DynamoDB")]),
]

# paraphrases that move words around a directional word (or a comma): the order check must let them through
HAND_SAME: list[tuple[str, str]] = [
    ("How do I convert a string to an integer in Java?", "In Java, how do I convert a string into an integer?"),
    ("Did Germany beat Brazil in 2014?", "In 2014, did Germany beat Brazil?"),
    ("Was Brazil defeated by Germany in 2014?", "Did Germany defeat Brazil in 2014?"),
    ("What is the flight time from London to Paris?", "What is the flight time to Paris from London?"),
    ("How do I get from the airport to downtown?", "How do I get downtown from the airport?"),
    ("How far is Lyon from Paris?", "How far is it from Paris to Lyon?"),
    ("Python vs Java for web development?", "Java vs Python for web development?"),
    ("What is the capital of France?", "France: what is its capital?"),
    ("Translate 'good morning' into French.", "What is 'good morning' in French?"),
    ("What's France's capital city?", "Capital of France?"),  # issue 15's example (`France's` is `France`)
    ("How do I redirect HTTP to HTTPS in nginx?", "In nginx, how do I redirect HTTP to HTTPS?"),
    ("How many feet are in a mile?", "How many feet in a mile?"),
    ("How many ounces in a pound?", "How many ounces are there in a pound?"),
    ("How many grams are in a kilogram?", "A kilogram is how many grams?"),
    ("What is the population of the us?", "How many people live in the us?"),
    ("Should I switch my site from http to https?", "Should I switch my site to https from http?"),
]


def _pairs() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for number, (kind, wordings, values) in enumerate(FAMILIES):
        split = "calib" if number % 2 == 0 else "heldout"
        family = f"f{number:02d}"
        for value in values[:2]:
            for left, right in itertools.combinations(wordings, 2):
                rows.append({"a": left.format(x=value), "b": right.format(x=value), "label": "same",
                             "kind": "paraphrase", "family": family, "split": split})
        for left_value, right_value in itertools.combinations(values, 2):
            for wording in wordings:
                rows.append({"a": wording.format(x=left_value), "b": wording.format(x=right_value),
                             "label": "different", "kind": kind, "family": family, "split": split})
            rows.append({"a": wordings[0].format(x=left_value), "b": wordings[-1].format(x=right_value),
                         "label": "different", "kind": kind, "family": family, "split": split})
    for number, (kind, wordings, values) in enumerate(FAMILIES):  # different requests: for the threshold
        for step in (1, 7, 19):
            other = FAMILIES[(number + step) % len(FAMILIES)]
            rows.append({"a": wordings[step % len(wordings)].format(x=values[0]),
                         "b": other[1][0].format(x=other[2][-1]), "label": "different", "kind": "unrelated",
                         "family": f"u{number:02d}", "split": "calib" if number % 2 == 0 else "heldout"})
    for number, left in enumerate(PLAIN):
        for step in (1, 3, 11):
            rows.append({"a": left, "b": PLAIN[(number + step) % len(PLAIN)], "label": "different",
                         "kind": "unrelated", "family": f"p{number:02d}",
                         "split": "calib" if number % 2 == 0 else "heldout"})
    for number, (left, right, kind) in enumerate(HAND_PAIRS):
        rows.append({"a": left, "b": right, "label": "different", "kind": kind, "family": f"h{number:02d}",
                     "split": "calib" if number % 2 == 0 else "heldout"})
    for number, (wordings, values) in enumerate(ORDER_FAMILIES):
        split = "calib" if number % 2 == 0 else "heldout"
        family = f"o{number:02d}"
        for a, b in values:
            for left, right in itertools.combinations(wordings, 2):
                rows.append({"a": left.format(a=a, b=b), "b": right.format(a=a, b=b), "label": "same",
                             "kind": "paraphrase", "family": family, "split": split})
            for wording in wordings:
                rows.append({"a": wording.format(a=a, b=b), "b": wording.format(a=b, b=a), "label": "different",
                             "kind": "order", "family": family, "split": split})
            rows.append({"a": wordings[0].format(a=a, b=b), "b": wordings[-1].format(a=b, b=a),
                         "label": "different", "kind": "order", "family": family, "split": split})
    for number, (left, right) in enumerate(HAND_SAME):
        rows.append({"a": left, "b": right, "label": "same", "kind": "paraphrase", "family": f"s{number:02d}",
                     "split": "calib" if number % 2 == 0 else "heldout"})
    return rows


def render() -> str:
    """The JSONL text of the pair set."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _pairs())


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"{OUT}: {len(_pairs())} pairs")
