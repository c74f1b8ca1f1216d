// Args - the examples' command-line options: --name value pairs, each with a default.
package io.m3rec.examples;

import java.util.HashMap;
import java.util.Map;

final class Args {
    private final Map<String, String> values = new HashMap<>();

    /**
     * Parses "--name value" pairs; defaults are name, value, name, value...; names without
     * a default are refused (a typo fails loudly).
     */
    Args(String[] argv, String usage, String... defaults) {
        for (int i = 0; i + 1 < defaults.length; i += 2) values.put(defaults[i], defaults[i + 1]);
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("-h") || a.equals("--help")) fail(usage, null);
            if (!a.startsWith("--") || !values.containsKey(a.substring(2)) || i + 1 == argv.length)
                fail(usage, "bad argument: " + a);
            values.put(a.substring(2), argv[++i]);
        }
    }

    private static void fail(String usage, String why) {
        if (why != null) System.err.println(why);
        System.err.println(usage);
        System.exit(2);
    }

    String str(String name) { return values.get(name); }
    long num(String name) { return Long.parseLong(values.get(name)); }
}
