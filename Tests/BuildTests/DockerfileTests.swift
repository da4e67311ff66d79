import Build
import Testing

/// The Dockerfile front end: directives, comments, continuations,
/// here-documents, flags, exec and shell forms, stages, and errors that
/// name the file, line and column.
@Suite struct DockerfileTests {
    @Test func directivesChooseTheEscapeCharacter() throws {
        let file = try Dockerfile(parsing: """
            # syntax=docker/dockerfile:1
            # Escape = `
            FROM busybox
            RUN echo one `
                && echo two
            COPY C:\\data /data
            """)
        #expect(file.directives == ["syntax": "docker/dockerfile:1", "escape": "`"])
        #expect(file.escape == "`")
        let run = file.stages[0].instructions[0]
        #expect(run.arguments == .shell("echo one     && echo two"))
        #expect(file.stages[0].instructions[1].arguments == .shell("C:\\data /data"))
    }

    @Test func aDirectiveAfterACommentIsAComment() throws {
        let file = try Dockerfile(parsing: "# a comment\n# escape=`\nFROM busybox\nRUN a \\\n b\n")
        #expect(file.directives.isEmpty && file.escape == "\\")
        #expect(file.stages[0].instructions[0].arguments == .shell("a  b"))
        #expect(throws: BuildError.self) { try Dockerfile(parsing: "# escape=x\nFROM busybox\n") }
        #expect(throws: BuildError.self) { try Dockerfile(parsing: "# syntax=a\n# syntax=b\nFROM busybox\n") }
    }

    @Test func continuationsSkipCommentsAndEmptyLines() throws {
        // (A space follows the first escape character.)
        let file = try Dockerfile(parsing: "FROM debian:12\nRUN apt-get update \\   \n    # the packages\n    && apt-get install -y \\\n\n"
            + "       curl \\\n       ca-certificates\n\tENV A=1\n")
        let instructions = file.stages[0].instructions
        #expect(instructions.count == 2)
        guard case .shell(let line) = instructions[0].arguments else { Issue.record("not the shell form"); return }
        #expect(line.split(separator: " ") == ["apt-get", "update", "&&", "apt-get", "install", "-y", "curl", "ca-certificates"])
        #expect(line.hasPrefix("apt-get update     && apt-get"))
        #expect(instructions[0].location.line == 2)
        #expect(instructions[1].keyword == "ENV" && instructions[1].location == SourceLocation(file: "Dockerfile", line: 8, column: 2))
    }

    @Test func execAndShellForms() throws {
        let file = try Dockerfile(parsing: """
            from busybox
            CMD ["sh", "-c", "echo hi"]
            entrypoint [ "/bin/app" ]
            RUN [not json
            VOLUME ["/data", "/logs"]
            SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
            LABEL ["not", "exec"]
            """)
        let forms = file.stages[0].instructions.map(\.arguments)
        #expect(forms == [.exec(["sh", "-c", "echo hi"]), .exec(["/bin/app"]), .shell("[not json"), .exec(["/data", "/logs"]),
                          .exec(["/bin/ash", "-eo", "pipefail", "-c"]), .shell("[\"not\", \"exec\"]")])
        #expect(file.stages[0].instructions.map(\.keyword) == ["CMD", "ENTRYPOINT", "RUN", "VOLUME", "SHELL", "LABEL"])
        let error = try #require(throws: BuildError.self) { try Dockerfile(parsing: "FROM busybox\nSHELL /bin/sh -c\n", file: "app/Dockerfile") }
        #expect(error.code == .syntax && error.message.hasPrefix("app/Dockerfile:2:1: SHELL needs"), "\(error.message)")
    }

    @Test func hereDocuments() throws {
        let file = try Dockerfile(parsing: """
            FROM busybox
            RUN <<EOF
            echo "$HOME"
            echo done
            EOF
            COPY <<first <<'second' /dest/
            one
            first
            two $NOT
            second
            RUN <<-END cat > /greeting && cat <<"RAW" > /raw
            \t\thello
            \tEND
            $raw
            RAW
            RUN echo "<<NOT" 'a <<NOR b' && cat <<<here
            """)
        let instructions = file.stages[0].instructions
        #expect(instructions.count == 4)
        #expect(instructions[0].heredocs == [Heredoc(delimiter: "EOF", content: "echo \"$HOME\"\necho done\n", expands: true)])
        #expect(instructions[1].heredocs == [Heredoc(delimiter: "first", content: "one\n", expands: true),
                                             Heredoc(delimiter: "second", content: "two $NOT\n", expands: false)])
        #expect(instructions[2].heredocs == [Heredoc(delimiter: "END", content: "hello\n", expands: true),
                                             Heredoc(delimiter: "RAW", content: "$raw\n", expands: false)])
        #expect(instructions[3].heredocs.isEmpty)
        let error = try #require(throws: BuildError.self) { try Dockerfile(parsing: "FROM busybox\nRUN <<EOF\necho\n") }
        #expect(error.message.hasPrefix("Dockerfile:2:1: the here-document EOF is not ended"), "\(error.message)")
    }

    @Test func hereDocumentDelimitersAreWords() throws {
        let file = try Dockerfile(parsing: "FROM busybox\nCOPY <<file1 <<'file2' /dest/\na\nfile1\nb\nfile2\n")
        #expect(file.stages[0].instructions[0].heredocs == [Heredoc(delimiter: "file1", content: "a\n", expands: true),
                                                             Heredoc(delimiter: "file2", content: "b\n", expands: false)])
    }

    @Test func flagsComeBeforeTheArguments() throws {
        let file = try Dockerfile(parsing: """
            FROM --platform=$BUILDPLATFORM golang:1.22 AS Build
            RUN --mount=type=cache,target=/root/.cache/go-build --mount=type=secret,id=token --network=none go build ./...
            COPY --from=build --chown=app:app --chmod=0755 --link /out/app /usr/local/bin/
            ENV --not-a-flag=1
            """)
        let stage = file.stages[0]
        #expect(stage.name == "build" && stage.base == "golang:1.22" && stage.platform == "$BUILDPLATFORM")
        let run = stage.instructions[0]
        #expect(run.flagValues("mount") == ["type=cache,target=/root/.cache/go-build", "type=secret,id=token"])
        #expect(run.flag("network") == "none" && run.arguments == .shell("go build ./..."))
        let copy = stage.instructions[1]
        #expect(copy.flag("from") == "build" && copy.flag("chmod") == "0755" && copy.flag("link") == "" && copy.flag("parents") == nil)
        #expect(stage.instructions[2].flags.isEmpty && stage.instructions[2].arguments == .shell("--not-a-flag=1"))
    }

    @Test func stagesAndGlobalArguments() throws {
        let file = try Dockerfile(parsing: """
            ARG BASE=debian:12
            ARG VERSION
            FROM ${BASE} AS deps
            RUN true
            FROM scratch
            COPY --from=deps / /
            ONBUILD RUN echo later
            """)
        #expect(file.globalArguments.map(\.arguments) == [.shell("BASE=debian:12"), .shell("VERSION")])
        #expect(file.stages.map(\.name) == ["deps", nil])
        #expect(file.stages.map(\.base) == ["${BASE}", "scratch"])
        #expect(file.stage("DEPS")?.instructions.count == 1 && file.stage("1")?.base == "scratch" && file.stage("2") == nil)
    }

    @Test(arguments: [
        ("RUN true\nFROM busybox\n", "Dockerfile:1:1: RUN comes before the first FROM"),
        ("FROM busybox\n  FORM x\n", "Dockerfile:2:3: unknown instruction FORM"),
        ("# only a comment\n", "Dockerfile:1:1: the Dockerfile has no FROM"),
        ("FROM a AS one\nFROM b AS ONE\n", "Dockerfile:2:1: the stage name ONE is used twice"),
        ("FROM a AS 1st\n", "Dockerfile:1:1: 1st is not a valid stage name"),
        ("FROM a b\n", "Dockerfile:1:1: FROM takes an image"),
        ("FROM --pull a\n", "Dockerfile:1:1: FROM has no flag --pull"),
        ("FROM a\nONBUILD FROM b\n", "Dockerfile:2:1: ONBUILD cannot trigger FROM"),
        ("FROM a\nRUN -- x\n", "Dockerfile:2:1: RUN has an empty flag"),
    ])
    func badInputNamesTheLineAndColumn(text: String, expected: String) throws {
        let error = try #require(throws: BuildError.self) { try Dockerfile(parsing: text) }
        #expect(error.code == .syntax && error.message.hasPrefix(expected), "\(error.message)")
    }

    /// A Dockerfile of the kind projects ship: a build stage with cache
    /// mounts and a slim final stage.
    @Test func aTypicalMultiStageDockerfile() throws {
        let file = try Dockerfile(parsing: """
            # syntax=docker/dockerfile:1.7

            ARG NODE_VERSION=20
            FROM node:${NODE_VERSION}-bookworm-slim AS base
            WORKDIR /app
            ENV NODE_ENV=production \\
                PORT=3000

            FROM base AS deps
            COPY package.json package-lock.json ./
            RUN --mount=type=cache,target=/root/.npm \\
                npm ci --omit=dev

            FROM base AS runner
            LABEL org.opencontainers.image.title="web" maintainer="ops@example.com"
            COPY --from=deps --chown=node:node /app/node_modules ./node_modules
            COPY --chown=node:node . .
            USER node
            EXPOSE 3000/tcp
            HEALTHCHECK --interval=30s --timeout=3s CMD wget -q -O /dev/null http://localhost:3000/health || exit 1
            STOPSIGNAL SIGTERM
            CMD ["node", "server.js"]
            """)
        #expect(file.stages.map(\.name) == ["base", "deps", "runner"])
        #expect(file.stages[2].instructions.map(\.keyword) == ["LABEL", "COPY", "COPY", "USER", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "CMD"])
        #expect(file.stages[2].instructions[5].flag("interval") == "30s")
        #expect(file.stages[1].instructions[1].arguments == .shell("npm ci --omit=dev"))
    }
}

/// Docker's variable substitution and word processing.
@Suite struct VariableExpansionTests {
    let expansion = VariableExpansion(variables: ["NAME": "app", "EMPTY": "", "SPACED": "a b", "HOME": "/root"])

    @Test func theFormsDockerAllows() throws {
        let cases: [(String, String)] = [
            ("$NAME", "app"), ("${NAME}", "app"), ("pre-${NAME}-post", "pre-app-post"), ("$UNSET", ""),
            ("${UNSET:-def}", "def"), ("${EMPTY:-def}", "def"), ("${NAME:-def}", "app"),
            ("${UNSET-def}", "def"), ("${EMPTY-def}", ""), ("${NAME:+alt}", "alt"), ("${EMPTY:+alt}", ""),
            ("${UNSET+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET:-${NAME}/x}", "app/x"),
            ("\\$NAME", "$NAME"), ("'$NAME'", "$NAME"), ("\"$NAME and $SPACED\"", "app and a b"), ("a$", "a$"), ("$1x", "x"),
        ]
        for (input, output) in cases {
            #expect(try expansion.word(input) == output, "\(input)")
        }
    }

    @Test func wordsSplitAtUnquotedSpaces() throws {
        #expect(try expansion.words("src/*.swift \"with space\" $SPACED 'q $NAME' /dst/") == ["src/*.swift", "with space", "a b", "q $NAME", "/dst/"])
        #expect(try VariableExpansion(escape: "`", variables: ["A": "1"]).word("`$A-$A") == "$A-1")
    }

    @Test func errorsNameTheReference() throws {
        for input in ["${NAME", "${}", "${NAME/x/y}", "'open", "\"open"] {
            let error = try #require(throws: BuildError.self, "\(input)") { try expansion.word(input) }
            #expect(error.code == .substitution)
        }
        let required = try #require(throws: BuildError.self) { try expansion.word("${UNSET:?give UNSET with --build-arg}") }
        #expect(required.message == "UNSET: give UNSET with --build-arg")
        #expect(try expansion.word("${NAME:?}") == "app")
    }

    @Test func keyValuePairs() throws {
        let pairs = try expansion.pairs("A=1 B=\"two words\" C=$NAME D=${UNSET:-x} E=")
        #expect(pairs.map(\.key) == ["A", "B", "C", "D", "E"])
        #expect(pairs.map(\.value) == ["1", "two words", "app", "x", ""])
        let older = try expansion.pairs("GREETING hello  $NAME world")
        #expect(older.count == 1 && older[0].key == "GREETING" && older[0].value == "hello  app world")
        let arguments = try expansion.pairs("VERSION TARGET=linux", allowingBare: true)
        #expect(arguments.map(\.key) == ["VERSION", "TARGET"] && arguments.map(\.value) == [nil, "linux"])
        #expect(throws: BuildError.self) { try expansion.pairs("A=1 B") }
        #expect(throws: BuildError.self) { try expansion.pairs("=1") }
    }
}
