import Testing
import Runtime

/// Docker's short mount syntax, read once for `-v` and compose files.
@Suite struct VolumeSyntaxTests {
    @Test func sourcesTargetsAndOptions() throws {
        let bind = try ContainerSpec.VolumeSyntax(parsing: "/srv/data:/data:ro,rslave")
        #expect(bind.isHostPath && bind.source == "/srv/data" && bind.target == "/data")
        #expect(bind.readOnly && bind.propagation == .rslave && bind.ignoredOptions.isEmpty)
        let volume = try ContainerSpec.VolumeSyntax(parsing: "cache:/var/cache:rw,nocopy,z")
        #expect(!volume.isHostPath && !volume.readOnly && volume.ignoredOptions == ["nocopy", "z"])
        #expect(try ContainerSpec.VolumeSyntax(parsing: "./site:/www").isHostPath)
        #expect(try ContainerSpec.VolumeSyntax(parsing: "~/site:/www:cached").ignoredOptions == ["cached"])
    }

    @Test(arguments: [
        ("/data", "anonymous volumes are not supported"),
        ("a:b:c:d", "is not SOURCE:TARGET[:OPTIONS]"),
        (":/data", "is not SOURCE:TARGET[:OPTIONS]"),
        ("/srv:data", "must be an absolute path"),
        ("/srv:/data:rshared", "shared propagation is not offered"),
        ("/srv:/data:exec", "unknown option exec"),
        ("cache:/data:rslave", "propagation applies to bind mounts"),
    ])
    func mistakesAreNamed(_ text: String, _ expected: String) {
        #expect {
            try ContainerSpec.VolumeSyntax(parsing: text)
        } throws: { error in
            (error as? RuntimeError)?.code == .invalidSpec && "\(error)".contains(expected)
        }
    }
}
