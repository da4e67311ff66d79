// `import GantryTesting` is enough to write tests: the umbrella's types
// (`StateRoot`, `ContainerSpec`, `PublishedPort`, …) come with it.
@_exported import Gantry
