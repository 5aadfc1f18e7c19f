//! Macros that export a plugin's root module, so a plugin crate needs no abi_stable
//! boilerplate and cannot get the root module wrong.

/// Exports a backend plugin. The three functions are ordinary Rust functions
/// `fn(BuildRequest) -> Result<BuildResult, PluginError>` (and likewise for unpack/index);
/// the macro wraps them into panic-safe `extern "C"` JSON functions. An operation the plugin
/// does not provide returns `Err(PluginError::unsupported("unpack"))`.
///
/// The plugin crate must depend on `abi_stable` directly (see the crate docs).
#[macro_export]
macro_rules! export_backend_plugin {
    (
        name: $name:expr,
        aliases: [$($alias:expr),* $(,)?],
        description: $description:expr,
        build: $build:path,
        unpack: $unpack:path,
        index: $index:path $(,)?
    ) => {
        #[doc(hidden)]
        pub mod __vcontainer_plugin_export {
            use $crate::abi_stable::std_types::{RResult, RStr, RString, ROption, RVec};
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn info() -> $crate::PluginInfo {
                $crate::PluginInfo {
                    name: RString::from($name),
                    version: RString::from(env!("CARGO_PKG_VERSION")),
                    aliases: {
                        let aliases: RVec<RString> = RVec::from(vec![$(RString::from($alias)),*]);
                        aliases
                    },
                    description: RString::from($description),
                }
            }
            extern "C" fn build(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, super::$build)
            }
            extern "C" fn unpack(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, super::$unpack)
            }
            extern "C" fn index(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, super::$index)
            }

            /// The root module of this plugin.
            #[::abi_stable::export_root_module]
            pub fn vcontainer_plugin_root() -> $crate::PluginRootRef {
                let backend = $crate::BackendModule { build, unpack, index }.leak_into_prefix();
                $crate::PluginRoot {
                    interface_version: $crate::INTERFACE_VERSION,
                    kind: $crate::PluginKind::Backend,
                    info,
                    runtime: ROption::RNone,
                    backend: ROption::RSome(backend),
                }
                .leak_into_prefix()
            }
        }
    };
}

/// Exports a runtime plugin. `spec` is `fn() -> RuntimeSpec`; `plan` is
/// `fn(&[String]) -> Result<CommandPlan, PluginError>`. Panics are caught at the boundary.
///
/// The plugin crate must depend on `abi_stable` directly (see the crate docs).
#[macro_export]
macro_rules! export_runtime_plugin {
    (
        name: $name:expr,
        aliases: [$($alias:expr),* $(,)?],
        description: $description:expr,
        spec: $spec:path,
        plan: $plan:path $(,)?
    ) => {
        #[doc(hidden)]
        pub mod __vcontainer_plugin_export {
            use $crate::abi_stable::std_types::{RResult, RSlice, RString, ROption, RVec};
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn info() -> $crate::PluginInfo {
                $crate::PluginInfo {
                    name: RString::from($name),
                    version: RString::from(env!("CARGO_PKG_VERSION")),
                    aliases: {
                        let aliases: RVec<RString> = RVec::from(vec![$(RString::from($alias)),*]);
                        aliases
                    },
                    description: RString::from($description),
                }
            }
            extern "C" fn spec() -> $crate::runtime::RuntimeSpec {
                // A spec is built from literals; a panic here is a plugin bug, and aborting
                // is the only option across extern "C" without a Result.
                super::$spec()
            }
            extern "C" fn plan(
                args: RSlice<'_, RString>,
            ) -> RResult<$crate::runtime::CommandPlan, $crate::PluginError> {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                $crate::catch_panic(|| super::$plan(&args)).into()
            }

            /// The root module of this plugin.
            #[::abi_stable::export_root_module]
            pub fn vcontainer_plugin_root() -> $crate::PluginRootRef {
                let runtime = $crate::RuntimeModule { spec, plan }.leak_into_prefix();
                $crate::PluginRoot {
                    interface_version: $crate::INTERFACE_VERSION,
                    kind: $crate::PluginKind::Runtime,
                    info,
                    runtime: ROption::RSome(runtime),
                    backend: ROption::RNone,
                }
                .leak_into_prefix()
            }
        }
    };
}
