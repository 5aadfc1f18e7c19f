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
        // An anonymous const block: the plugin's own function names stay visible, and the
        // wrappers below cannot clash with them (hence their prefixed names).
        const _: () = {
            use $crate::abi_stable::std_types::{RResult, RStr, RString, ROption};
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn __vc_build(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, $build)
            }
            extern "C" fn __vc_unpack(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, $unpack)
            }
            extern "C" fn __vc_index(req: RStr<'_>) -> RResult<RString, $crate::PluginError> {
                $crate::backend::serve(req, $index)
            }

            $crate::__export_plugin_root! {
                name: $name,
                aliases: [$($alias),*],
                description: $description,
                kind: Backend,
                runtime: ROption::RNone,
                backend: ROption::RSome(
                    $crate::BackendModule {
                        build: __vc_build,
                        unpack: __vc_unpack,
                        index: __vc_index,
                    }
                    .leak_into_prefix()
                ),
            }
        };
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
        // An anonymous const block: the plugin's own function names stay visible, and the
        // wrappers below cannot clash with them (hence their prefixed names).
        const _: () = {
            use $crate::abi_stable::std_types::{RResult, RSlice, RString, ROption};
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn __vc_spec() -> $crate::runtime::RuntimeSpec {
                // A spec is built from literals; a panic here is a plugin bug, and aborting
                // is the only option across extern "C" without a Result.
                $spec()
            }
            extern "C" fn __vc_plan(
                args: RSlice<'_, RString>,
            ) -> RResult<$crate::runtime::CommandPlan, $crate::PluginError> {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                $crate::catch_panic(|| $plan(&args)).into()
            }

            $crate::__export_plugin_root! {
                name: $name,
                aliases: [$($alias),*],
                description: $description,
                kind: Runtime,
                runtime: ROption::RSome(
                    $crate::RuntimeModule {
                        spec: __vc_spec,
                        plan: __vc_plan,
                    }
                    .leak_into_prefix()
                ),
                backend: ROption::RNone,
            }
        };
    };
}

/// What both export macros write alike: the plugin's info function and its root module
/// (the one symbol the host loads), given the kind and the module of that kind, so the
/// root's layout is spelled once. For the two macros above only; plugins do not call it.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_root {
    (
        name: $name:expr,
        aliases: [$($alias:expr),*],
        description: $description:expr,
        kind: $kind:ident,
        runtime: $runtime:expr,
        backend: $backend:expr $(,)?
    ) => {
        extern "C" fn __vc_info() -> $crate::PluginInfo {
            use $crate::abi_stable::std_types::{RString, RVec};
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

        /// The root module of this plugin.
        #[::abi_stable::export_root_module]
        pub fn __vc_plugin_root() -> $crate::PluginRootRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::PluginRoot {
                interface_version: $crate::INTERFACE_VERSION,
                kind: $crate::PluginKind::$kind,
                info: __vc_info,
                runtime: $runtime,
                backend: $backend,
            }
            .leak_into_prefix()
        }
    };
}
